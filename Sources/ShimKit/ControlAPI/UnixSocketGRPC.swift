import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// One gRPC client connection over a unix socket, for the CLI's and tools'
/// calls to a shim or the registrar: opened, used by `body`, closed.
enum UnixSocketGRPC {
    /// `missing` is the message when nothing is at `socketPath`; `context`
    /// names the endpoint in transport errors.
    static func withClient<T: Sendable>(
        socketPath: String, missing: String, context: String,
        _ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        guard FileIO.exists(socketPath) else { throw ShimError(.notFound, missing) }
        let transport = try HTTP2ClientTransport.Posix(
            target: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext,
            config: .defaults { $0.backoff.initial = .milliseconds(50) }, eventLoopGroup: EventLoops.shared)
        do {
            return try await withGRPCClient(transport: transport) { try await body($0) }
        } catch {
            throw ShimError.fromRPC(error, context)
        }
    }
}
