/// The one error type ShimKit throws across module boundaries.
///
/// `code` is a stable, machine-readable category (mapped to RPC status codes in
/// exactly one place, `ShimError+RPC.swift`); `message` is for humans and names
/// the file, element, domain or command involved and what to do; `cause` keeps
/// the underlying error for logs.
public struct ShimError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        private init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The caller's input (XML, request, flag) is wrong.
        public static let invalidArgument = Code("invalidArgument")
        /// Valid input that vmshim does not support (yet).
        public static let unsupported = Code("unsupported")
        public static let notFound = Code("notFound")
        public static let alreadyExists = Code("alreadyExists")
        /// The VM is not in a state that allows the operation.
        public static let invalidState = Code("invalidState")
        public static let timeout = Code("timeout")
        public static let permissionDenied = Code("permissionDenied")
        /// QEMU refused to start or died.
        public static let qemuFailed = Code("qemuFailed")
        /// QEMU answered a QMP command with an error.
        public static let qmpCommandFailed = Code("qmpCommandFailed")
        /// The QMP or control connection broke.
        public static let unavailable = Code("unavailable")
        /// A host operation (file, socket, process) failed.
        public static let system = Code("system")
        public static let cancelled = Code("cancelled")
        public static let internalError = Code("internalError")
    }

    public var code: Code
    public var message: String
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        guard let cause else { return message }
        return "\(message) (\(cause))"
    }
}

extension ShimError {
    /// Wraps any error as a ShimError, keeping ShimErrors unchanged.
    public static func wrap(_ error: any Error, _ code: Code = .internalError, _ context: String) -> ShimError {
        if let shimError = error as? ShimError { return shimError }
        return ShimError(code, "\(context): \(error)", cause: error)
    }
}
