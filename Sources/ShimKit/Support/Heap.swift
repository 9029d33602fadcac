import CShimKit

public enum Heap {
    /// Returns free heap pages to the kernel (glibc malloc_trim). Long-lived
    /// daemons call it after bursts: glibc otherwise keeps freed memory
    /// resident.
    public static func trim() { _ = cshim_malloc_trim() }
}
