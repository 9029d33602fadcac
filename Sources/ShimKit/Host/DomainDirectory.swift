/// The domains under a run root, as found from their run directories.
public struct DomainDirectory: Sendable {
    public let root: String

    public init(root: String) { self.root = root }

    public struct Entry: Sendable {
        public var runDirectory: RunDirectory
        public var status: StatusFile?
        /// A live shim holds the run directory's lock.
        public var shimAlive: Bool
        public var qemuAlive: Bool
        public var readError: String?
    }

    public func entries() -> [Entry] {
        FileIO.listDirectory(root).compactMap { name in
            let directory = RunDirectory(root: root, name: name)
            guard FileIO.isDirectory(directory.path), FileIO.exists(directory.statusFile) || FileIO.exists("\(directory.path)/lock") else {
                return nil
            }
            var entry = Entry(runDirectory: directory, status: nil, shimAlive: RunDirectoryLock.isHeld(directory), qemuAlive: false)
            do {
                let status = try StatusFile.read(from: directory.statusFile)
                entry.status = status
                entry.qemuAlive = status.qemu?.isAlive ?? false
            } catch {
                entry.readError = "\(error)"
            }
            return entry
        }
    }

    /// Finds a domain by name, or by UUID (with or without dashes, any case).
    public func find(_ nameOrUUID: String) throws -> Entry {
        let all = entries()
        if let byName = all.first(where: { $0.runDirectory.name == nameOrUUID }) { return byName }
        if let wanted = DomainUUID(nameOrUUID) {
            if let byUUID = all.first(where: { $0.status?.uuid == wanted.description }) { return byUUID }
        }
        throw ShimError(
            .notFound,
            "no domain named or with UUID '\(nameOrUUID)' under \(root) (see 'vmshim list'; use --run-root if the shim uses another root)")
    }
}
