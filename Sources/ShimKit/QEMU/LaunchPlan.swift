/// Everything needed to start QEMU for one domain: argv, environment, and the
/// host resources vmshim opens and hands over as file descriptors.
///
/// Built by `QEMUCommandLine.plan`, a pure function, so the same domain always
/// yields the same plan (golden files in Tests/ShimKitTests/Fixtures/argv).
public struct LaunchPlan: Sendable, Equatable {
    public var executable: String
    /// Arguments after argv[0].
    public var arguments: [String]
    public var environment: [String]
    /// Resources opened by the shim and inherited by QEMU at `childFD`.
    public var fds: [FDRequest]
    /// Directories QEMU creates files in (RAM backing files: the run
    /// directory's ram/, the huge page directory), made by the launcher for
    /// QEMU's user before it starts and removed if the start fails.
    public var directories: [String] = []

    public var argv: [String] { [executable] + arguments }

    /// The fd number QEMU reads a restore's stream from.
    public var incomingMigrationFD: Int32? { fds.first { $0.resource == .incomingMigration }?.childFD }

    /// libvirt-style rendering: `KEY=value \` lines, the binary, then one option
    /// per line; values with shell-special characters are single-quoted.
    public func rendered() -> String {
        var lines = environment.map { LaunchPlan.quote($0) }
        lines.append(LaunchPlan.quote(executable))
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument.hasPrefix("-"), index + 1 < arguments.count, !arguments[index + 1].hasPrefix("-") {
                lines.append(argument + " " + LaunchPlan.quote(arguments[index + 1]))
                index += 2
            } else {
                lines.append(LaunchPlan.quote(argument))
                index += 1
            }
        }
        return lines.joined(separator: " \\\n") + "\n"
    }

    static func quote(_ text: String) -> String {
        let safe = text.unicodeScalars.allSatisfy { scalar in
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", "-", "_", ".", "/", ",", ":", "=", "@", "+": return true
            default: return false
            }
        }
        if safe, !text.isEmpty { return text }
        return "'" + text.replacingAll("'", with: "'\\''") + "'"
    }
}

/// A host resource QEMU gets as an inherited file descriptor.
public struct FDRequest: Sendable, Equatable {
    public enum Resource: Sendable, Equatable {
        /// The QMP monitor's listening socket (created by the shim, so the path
        /// exists before QEMU starts and the shim can connect at once).
        case monitorListener(path: String)
        /// A listening socket for a character device in bind mode.
        case unixListener(path: String)
        /// A file a character device writes to; truncated unless `append`.
        case file(path: String, append: Bool)
        /// A tap device: created (or, unmanaged, opened) by the shim.
        case tap(name: String?, vnetHeader: Bool, managed: Bool, alias: String, multiQueue: Bool)
        /// Another queue of the multiqueue tap opened for `alias`.
        case tapQueue(alias: String, vnetHeader: Bool)
        /// A macvtap link the shim creates on the host device for `alias`
        /// (`<interface type='direct'>`), opened through its character device.
        case macvtap(alias: String, vnetHeader: Bool)
        /// The saved state a restore reads (`migrate-incoming fd:N`).
        case incomingMigration
    }
    public var childFD: Int32
    public var resource: Resource
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var remainder = self[...]
        while let range = remainder.range(of: target) {
            result += remainder[..<range.lowerBound]
            result += replacement
            remainder = remainder[range.upperBound...]
        }
        result += remainder
        return result
    }
}

extension Substring {
    func range(of target: String) -> Range<Substring.Index>? {
        guard !target.isEmpty, count >= target.count else { return nil }
        var start = startIndex
        while start < endIndex {
            if self[start...].hasPrefix(target) {
                return start..<index(start, offsetBy: target.count)
            }
            start = index(after: start)
        }
        return nil
    }
}
