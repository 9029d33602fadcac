#if canImport(Glibc)
import Glibc
#endif

/// A domain's UEFI variable store (pflash1): copied from the firmware's
/// template at the first start and the guest's own from then on (never
/// overwritten), as libvirt keeps /var/lib/libvirt/qemu/nvram/NAME_VARS.fd.
public enum NVRAMStore {
    /// Creates the store when it does not exist yet, atomically, owned by the
    /// user QEMU runs as. Blocking: call off the cooperative pool.
    public static func prepare(_ firmware: DomainSpec.Firmware, owner: ProcessCredentials?) throws {
        guard let path = firmware.nvram, !FileIO.exists(path) else { return }
        guard let template = firmware.nvramTemplate else {
            throw ShimError(
                .notFound,
                "the UEFI variable store \(path) does not exist and no template is known for the loader "
                    + "\(firmware.loader ?? "?"): add <nvram template='…'/> to <os>")
        }
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readBytes(template)
        } catch {
            throw ShimError(.notFound, "cannot read the UEFI variable store template \(template): \(error)", cause: error)
        }
        try FileIO.makeDirectories(FileIO.parentDirectory(of: path), mode: 0o755)
        try FileIO.writeAtomically(path, bytes, mode: 0o600)
        if let owner, chown(path, owner.uid, owner.gid) != 0 {
            let error = ShimError.system("cannot give the UEFI variable store \(path) to uid \(owner.uid)")
            FileIO.remove(path)
            throw error
        }
    }
}
