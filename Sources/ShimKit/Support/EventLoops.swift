import NIOPosix

/// The one event loop a shim needs: QMP and the control API are low-volume,
/// and every thread costs memory in each of the many shims on a host.
public enum EventLoops {
    public static let shared = MultiThreadedEventLoopGroup(numberOfThreads: 1)
}
