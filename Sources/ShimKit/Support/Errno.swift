#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An errno value with its strerror text, as a cause for ShimError.
public struct SystemError: Error, Sendable, CustomStringConvertible, Equatable {
    public let errno: Int32
    public init(_ errno: Int32) { self.errno = errno }
    public static var current: SystemError { SystemError(Glibc.errno) }
    public var description: String { String(cString: strerror(errno)) }
}

extension ShimError {
    /// A host call failed: `what` says what was attempted, e.g. "bind /run/vmshim/vm1/qmp.sock".
    public static func system(_ what: String, errno: Int32 = Glibc.errno) -> ShimError {
        let error = SystemError(errno)
        return ShimError(.system, "\(what): \(error)", cause: error)
    }
}
