import GRPCCore

/// The one place ShimError codes meet gRPC status codes, both ways.
///
/// The server sends the ShimError code in the `vmshim-error-code` trailer so a
/// vmshim client gets the exact code back; other clients see the gRPC status.
extension ShimError {
    static let codeMetadataKey = "vmshim-error-code"

    public var rpcCode: RPCError.Code {
        switch code {
        case .invalidArgument: return .invalidArgument
        case .unsupported: return .unimplemented
        case .notFound: return .notFound
        case .alreadyExists: return .alreadyExists
        case .invalidState: return .failedPrecondition
        case .timeout: return .deadlineExceeded
        case .permissionDenied: return .permissionDenied
        case .qmpCommandFailed: return .aborted
        case .qemuFailed: return .internalError
        case .unavailable: return .unavailable
        case .cancelled: return .cancelled
        default: return .internalError
        }
    }

    public var rpcError: RPCError {
        RPCError(code: rpcCode, message: message, metadata: [ShimError.codeMetadataKey: "\(code.rawValue)"])
    }

    /// Rebuilds a ShimError from what a server sent (or from a transport failure).
    public static func fromRPC(_ error: any Error, _ context: String) -> ShimError {
        if let shimError = error as? ShimError { return shimError }
        guard let rpc = error as? RPCError else { return ShimError(.unavailable, "\(context): \(error)", cause: error) }
        let sent = rpc.metadata[stringValues: ShimError.codeMetadataKey].first(where: { _ in true })
        let code = sent.flatMap(ShimError.Code.init(rawValue:)) ?? {
            switch rpc.code {
            case .invalidArgument: return .invalidArgument
            case .notFound: return .notFound
            case .alreadyExists: return .alreadyExists
            case .failedPrecondition: return .invalidState
            case .deadlineExceeded: return .timeout
            case .permissionDenied: return .permissionDenied
            case .unimplemented: return .unsupported
            case .unavailable: return .unavailable
            case .cancelled: return .cancelled
            case .aborted: return .qmpCommandFailed
            default: return .internalError
            }
        }()
        if rpc.code == .unavailable && sent == nil {
            return ShimError(.unavailable, "\(context) is not reachable (\(rpc.message))", cause: rpc)
        }
        return ShimError(code, rpc.message, cause: rpc)
    }
}

extension ShimError.Code {
    init?(rawValue: String) {
        let all: [ShimError.Code] = [
            .invalidArgument, .unsupported, .notFound, .alreadyExists, .invalidState, .timeout, .permissionDenied,
            .qemuFailed, .qmpCommandFailed, .unavailable, .system, .cancelled, .internalError,
        ]
        guard let match = all.first(where: { $0.rawValue == rawValue }) else { return nil }
        self = match
    }
}
