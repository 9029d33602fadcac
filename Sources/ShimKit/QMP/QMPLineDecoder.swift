import NIOCore

/// Splits QMP's CRLF-terminated JSON stream into lines.
///
/// QEMU writes one JSON document per line; a line longer than `maximumLength`
/// means the peer is not a sane QMP server and closes the connection.
public struct QMPLineDecoder: ByteToMessageDecoder {
    public typealias InboundOut = String
    public let maximumLength: Int

    public init(maximumLength: Int = 64 << 20) { self.maximumLength = maximumLength }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > maximumLength {
                throw ShimError(.unavailable, "QMP: a line longer than \(maximumLength) bytes arrived")
            }
            return .needMoreData
        }
        let length = newline - buffer.readerIndex
        var line = buffer.readString(length: length) ?? ""
        buffer.moveReaderIndex(forwardBy: 1)
        if line.hasSuffix("\r") { line.removeLast() }
        if !line.isEmpty { context.fireChannelRead(wrapInboundOut(line)) }
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        while try decode(context: context, buffer: &buffer) == .continue {}
        // A partial line at EOF is dropped: QEMU died mid-write and it cannot be parsed.
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }
}
