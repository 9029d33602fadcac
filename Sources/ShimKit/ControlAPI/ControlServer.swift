import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Serves the control API on `<run dir>/control.sock` (read-write) or
/// `<run dir>/control-ro.sock` (read-only).
///
/// The socket is bound by vmshim itself (a stale socket replaced, a clear
/// error for anything else at that path) and handed to gRPC as a listening
/// fd. The read-write socket is 0600, or 0660 with a configured group, and
/// every connection's peer is checked with SO_PEERCRED (`PeerPolicy`): a
/// socket file opened up by mistake still lets nobody else in. The read-only
/// socket is 0666 like libvirt's libvirt-sock-ro and serves the calls that
/// change nothing.
public final class ControlServer: Sendable {
    private let server: GRPCServer<HTTP2ServerTransport.Posix>
    public let path: String

    public init(
        supervisor: VMSupervisor, path: String, group: MultiThreadedEventLoopGroup, readOnly: Bool = false,
        socketGroup: UInt32? = nil
    ) throws {
        let mode: mode_t = readOnly ? 0o666 : socketGroup == nil ? 0o600 : 0o660
        let fd = try UnixSocket.listen(path: path, mode: mode, group: readOnly ? nil : socketGroup)
        let policy = readOnly ? PeerPolicy.anyone : PeerPolicy(allowedGroup: socketGroup)
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.channelDebuggingCallbacks.onAcceptHTTP2Stream = { stream in
            PeerAccess.guardStream(stream, policy: policy, socket: path)
        }
        let transport = HTTP2ServerTransport.Posix(
            listeningSocketDescriptor: Int(fd), transportSecurity: .plaintext, config: config, eventLoopGroup: group)
        self.server = GRPCServer(transport: transport, services: [ControlService(supervisor: supervisor, readOnly: readOnly)])
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
