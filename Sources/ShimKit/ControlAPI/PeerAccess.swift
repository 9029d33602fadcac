import NIOCore
import NIOHPACK
import NIOHTTP2
#if canImport(Glibc)
import Glibc
#endif

/// Who may use a control socket, checked on every connection with the
/// peer's kernel credentials (SO_PEERCRED), whatever the socket file's mode
/// lets through: root, the shim's own user, and members of the configured
/// socket group. Everyone else gets PERMISSION_DENIED on every call.
public struct PeerPolicy: Sendable, Equatable {
    public var allowedUsers: Set<UInt32>
    public var allowedGroup: UInt32?

    public init(allowedUsers: Set<UInt32> = [0, UInt32(getuid())], allowedGroup: UInt32? = nil) {
        self.allowedUsers = allowedUsers
        self.allowedGroup = allowedGroup
    }

    /// Anyone who can open the socket (the read-only socket).
    public static let anyone = PeerPolicy(allowedUsers: [], allowedGroup: nil)

    var isOpen: Bool { allowedUsers.isEmpty && allowedGroup == nil }

    /// `supplementaryGroups` is read only when the primary ones do not decide.
    public func allows(_ peer: PeerCredentials, supplementaryGroups: () -> [UInt32] = { [] }) -> Bool {
        if isOpen || allowedUsers.contains(peer.uid) { return true }
        guard let group = allowedGroup else { return false }
        return peer.gid == group || supplementaryGroups().contains(group)
    }
}

/// struct ucred, as SO_PEERCRED returns it.
public struct PeerCredentials: Sendable, Equatable {
    public var pid: Int32 = 0
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0

    public init(pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    /// The peer's supplementary groups, from /proc (empty if it is gone).
    func supplementaryGroups() -> [UInt32] {
        guard let status = try? FileIO.readString("/proc/\(pid)/status"),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Groups:") })
        else { return [] }
        return line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { UInt32($0) }
    }
}

public enum PeerAccess {
    /// Request metadata the server adds with the peer's kernel credentials
    /// (any value a client sent under these keys is replaced).
    public static let peerPIDKey = "vmshim-peer-pid"
    public static let peerUIDKey = "vmshim-peer-uid"

    /// Reads the peer of an HTTP/2 stream's connection; on a denied peer,
    /// puts a handler in front of gRPC that answers PERMISSION_DENIED. With
    /// `stampPeer`, an allowed call's metadata carries the peer's pid and uid.
    public static func guardStream(
        _ streamChannel: any Channel, policy: PeerPolicy, socket: String, stampPeer: Bool = false
    ) -> EventLoopFuture<Void> {
        guard !policy.isOpen || stampPeer, let connection = streamChannel.parent as? any SocketOptionProvider else {
            return streamChannel.eventLoop.makeSucceededVoidFuture()
        }
        let credentials: EventLoopFuture<PeerCredentials> = connection.unsafeGetSocketOption(
            level: NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET), name: NIOBSDSocket.Option(rawValue: SO_PEERCRED))
        return credentials.flatMapThrowing { peer in
            guard policy.allows(peer, supplementaryGroups: peer.supplementaryGroups) else {
                let message =
                    "permission denied: uid \(peer.uid) (pid \(peer.pid)) may not use \(socket); it serves root, uid \(getuid())\(policy.allowedGroup.map { " and group \($0)" } ?? ""). Use the read-only socket beside it for monitoring"
                try streamChannel.pipeline.syncOperations.addHandler(DenyingStreamHandler(message: message), position: .first)
                return
            }
            if stampPeer {
                try streamChannel.pipeline.syncOperations.addHandler(PeerStampingHandler(peer: peer), position: .first)
            }
        }
    }
}

/// Adds the peer's credentials to the headers that open a call.
final class PeerStampingHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload
    let peer: PeerCredentials

    init(peer: PeerCredentials) { self.peer = peer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .headers(var request) = unwrapInboundIn(data), request.headers.contains(name: ":path") else {
            context.fireChannelRead(data)
            return
        }
        request.headers.remove(name: PeerAccess.peerPIDKey)
        request.headers.remove(name: PeerAccess.peerUIDKey)
        request.headers.add(name: PeerAccess.peerPIDKey, value: String(peer.pid))
        request.headers.add(name: PeerAccess.peerUIDKey, value: String(peer.uid))
        context.fireChannelRead(wrapInboundOut(.headers(request)))
    }
}

/// Answers a stream's RPC with a trailers-only PERMISSION_DENIED response
/// and swallows what the peer sends, so the call never reaches the service.
final class DenyingStreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload
    let message: String

    init(message: String) { self.message = message }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Only the HEADERS that open the call (they carry :path) get the answer.
        guard case .headers(let request) = unwrapInboundIn(data), request.headers.contains(name: ":path") else { return }
        let headers: HPACKHeaders = [
            ":status": "200", "content-type": "application/grpc", "grpc-status": "7",
            "grpc-message": Self.percentEncoded(message),
        ]
        context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers, endStream: true))), promise: nil)
    }

    /// grpc-message is percent-encoded outside printable ASCII.
    static func percentEncoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if byte >= 0x20, byte <= 0x7E, byte != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}
