/// Runs `operation`, failing with a `.timeout` ShimError that names `what`
/// when it takes longer than `limit`. The operation is cancelled on timeout.
public func withThrowingTimeout<T: Sendable>(
    _ limit: Duration, _ what: @autoclosure () -> String, operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    let description = what()
    return try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw ShimError(.timeout, "timed out after \(limit.shortDescription) \(description)")
        }
        defer { group.cancelAll() }
        guard let result = try await group.next() else {
            throw ShimError(.internalError, "timeout group ended without a result")
        }
        return result
    }
}
