import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOPosix

/// Serves the control API on `<run dir>/control.sock`.
///
/// The socket is bound by vmshim itself (mode 0600, a stale socket replaced,
/// a clear error for anything else at that path) and handed to gRPC as a
/// listening fd.
public final class ControlServer: Sendable {
    private let server: GRPCServer<HTTP2ServerTransport.Posix>
    public let path: String

    public init(supervisor: VMSupervisor, path: String, group: MultiThreadedEventLoopGroup) throws {
        let fd = try UnixSocket.listen(path: path, mode: 0o600)
        let transport = HTTP2ServerTransport.Posix(
            listeningSocketDescriptor: Int(fd), transportSecurity: .plaintext, eventLoopGroup: group)
        self.server = GRPCServer(transport: transport, services: [ControlService(supervisor: supervisor)])
        self.path = path
    }

    /// Runs until `stop()`; in-flight calls finish first.
    public func serve() async throws {
        try await server.serve()
    }

    public func stop() {
        server.beginGracefulShutdown()
    }
}
