#if canImport(Glibc)
import Glibc
#endif

/// Where one VM's runtime files live: `<root>/<name>/`.
///
/// The root defaults to /run/vmshim; `--run-root` or `VMSHIM_RUN_ROOT` moves
/// it (a container launcher points it into the pod). The directory holds the
/// status file, the QMP and control sockets and any sockets vmshim creates
/// for the guest's character devices; it is removed when the VM ends.
public struct RunDirectory: Sendable, Equatable {
    public static let defaultRoot = "/run/vmshim"
    public static let environmentVariable = "VMSHIM_RUN_ROOT"

    public let root: String
    public let name: String

    public init(root: String, name: String) {
        self.root = root
        self.name = name
    }

    /// The flag wins, then the environment, then the default.
    public static func resolveRoot(_ flag: String?, environment: [String: String]) -> String {
        let chosen = flag ?? environment[environmentVariable] ?? defaultRoot
        return chosen.count > 1 && chosen.hasSuffix("/") ? String(chosen.dropLast()) : chosen
    }

    public var path: String { "\(root)/\(name)" }
    public var statusFile: String { "\(path)/status.json" }
    /// Files QEMU maps guest RAM from when an access mode is asked for on
    /// anonymous memory (libvirt's memory_backing_dir).
    public var memoryBackingDirectory: String { "\(path)/ram" }
    public var qmpSocket: String { "\(path)/qmp.sock" }
    public var controlSocket: String { "\(path)/control.sock" }
    /// The read-only control socket, for monitoring clients (0666).
    public var readOnlyControlSocket: String { "\(path)/control-ro.sock" }
    /// Sockets vmshim binds for the guest (channels without a path).
    public func deviceSocket(_ alias: String) -> String { "\(path)/\(alias).sock" }

    /// Creates the root (0755) and the VM's directory (0711: others may
    /// reach the read-only socket by name, and list or read nothing; every
    /// other file in it is 0600).
    public func create() throws {
        try FileIO.makeDirectories(root, mode: 0o755)
        if mkdir(path, 0o711) != 0, errno != EEXIST {
            throw ShimError.system("cannot create the run directory \(path)")
        }
        chmod(path, 0o711)
        try UnixSocket.checkPathLength(qmpSocket)
        try UnixSocket.checkPathLength(controlSocket)
    }

    public func remove() {
        FileIO.removeTree(path)
    }

    /// The log directory: /var/log/vmshim with the default root, `<root>/log`
    /// with a custom one (so a pod keeps its logs on its own volume).
    public static func defaultLogDirectory(root: String) -> String {
        root == defaultRoot ? "/var/log/vmshim" : "\(root)/log"
    }

    /// Managed-save images: /var/lib/vmshim/save with the default root
    /// (they must outlive /run), `<root>/save` with a custom one.
    public static func defaultSaveDirectory(root: String) -> String {
        root == defaultRoot ? "/var/lib/vmshim/save" : "\(root)/save"
    }

    /// Where UEFI variable stores live (`<name>_VARS.fd`): persistent, like
    /// libvirt's /var/lib/libvirt/qemu/nvram.
    public static func defaultNVRAMDirectory(root: String) -> String {
        root == defaultRoot ? "/var/lib/vmshim/nvram" : "\(root)/nvram"
    }
}
