/// What QEMU says it can give a guest CPU under one accelerator: the static
/// expansion of `max` (TCG) or `host` (KVM), and which named models it has
/// with the features each lacks here. `QEMUCPUProbe` gathers it at start.
public struct HostCPUReport: Sendable, Equatable {
    /// The CPUID vendor string, e.g. AuthenticAMD.
    public var vendor: String
    public var family: Int
    public var model: Int
    public var stepping: Int
    /// QEMU feature names that are on.
    public var features: Set<String>
    /// QEMU's named models and, for each, the features it would need that
    /// are not available (`unavailable-features`).
    public var models: [String: [String]]

    public init(vendor: String, family: Int, model: Int, stepping: Int, features: Set<String>, models: [String: [String]]) {
        self.vendor = vendor
        self.family = family
        self.model = model
        self.stepping = stepping
        self.features = features
        self.models = models
    }
}

/// `<cpu mode='host-model'>` turned into the named model and feature list
/// libvirt 9.0 would give the same guest, so the guest sees the same CPU.
///
/// libvirt decodes QEMU's report against its CPU map (`LibvirtCPUMap`):
/// newest model first, models of another vendor skipped, a model whose
/// family and model match the CPU's preferred, otherwise the one with the
/// fewest listed features, each disabled one weighing more than the last.
/// Features are listed required first, then disabled, in the map's order.
public enum HostCPUModel {
    public struct Expansion: Sendable, Equatable {
        public var model: String
        /// libvirt's vendor name (Intel, AMD, Hygon), for the live XML.
        public var vendor: String?
        public var features: [DomainSpec.CPU.Feature]
    }

    /// libvirt's spelling of a QEMU feature name and back (libvirt 9.0's
    /// translation table; every other name is the same in both, with '_' for '-').
    static let qemuNames: [String: String] = [
        "cmp_legacy": "cmp-legacy", "ds_cpl": "ds-cpl", "fxsr_opt": "fxsr-opt", "kvm_pv_eoi": "kvm-pv-eoi",
        "kvm_pv_unhalt": "kvm-pv-unhalt", "lahf_lm": "lahf-lm", "nodeid_msr": "nodeid-msr", "pclmuldq": "pclmulqdq",
        "perfctr_core": "perfctr-core", "perfctr_nb": "perfctr-nb", "tsc_adjust": "tsc-adjust",
    ]

    /// The name QEMU knows a libvirt feature by, as libvirt writes it on `-cpu`.
    public static func qemuName(_ libvirtName: String) -> String {
        qemuNames[libvirtName] ?? libvirtName
    }

    /// The host-model CPU for `report`, or an error naming what is missing.
    public static func expand(_ report: HostCPUReport) throws -> Expansion {
        let hostFeatures = Set(LibvirtCPUMap.features.filter { report.features.contains(qemuName($0)) })
        let vendor = LibvirtCPUMap.vendors[report.vendor]
        var best: (model: LibvirtCPUMap.Model, features: [DomainSpec.CPU.Feature])?
        for candidate in LibvirtCPUMap.models.reversed() {
            guard let blockers = report.models[candidate.name] else { continue }  // QEMU lacks it
            if let vendor, let own = candidate.vendor, own != vendor { continue }
            guard candidate.decodeGuest else { continue }
            let features = listing(candidate, host: hostFeatures, blockers: Set(blockers))
            guard let current = best else {
                best = (candidate, features)
                continue
            }
            let currentMatches = matchesSignature(current.model, report)
            let candidateMatches = matchesSignature(candidate, report)
            if currentMatches && !candidateMatches { continue }
            if !currentMatches && candidateMatches {
                best = (candidate, features)
                continue
            }
            let (currentTotal, currentDisabled) = weight(current.features)
            let (candidateTotal, candidateDisabled) = weight(features)
            if candidateTotal < currentTotal || (candidateTotal == currentTotal && candidateDisabled < currentDisabled) {
                best = (candidate, features)
            }
        }
        guard let best else {
            throw ShimError(
                .unsupported,
                "CPU mode 'host-model': none of libvirt's CPU models is available in this QEMU for a \(report.vendor) CPU; use mode='maximum' or a named model")
        }
        // Migratability is already QEMU's: the static expansion of max/host
        // holds only migratable features (libvirt keeps a disabled xsaves too).
        return Expansion(model: best.model.name, vendor: vendor, features: best.features)
    }

    /// What `model` needs on top to be the host CPU: the host's features the
    /// model lacks (required), the model's features the host lacks or QEMU
    /// cannot give (disabled), then features the model dropped (disabled).
    static func listing(_ model: LibvirtCPUMap.Model, host: Set<String>, blockers: Set<String>) -> [DomainSpec.CPU.Feature] {
        var features: [DomainSpec.CPU.Feature] = []
        for name in LibvirtCPUMap.features where host.contains(name) && !model.features.contains(name) {
            features.append(.init(name: name, policy: .require))
        }
        for name in LibvirtCPUMap.features where !host.contains(name) {
            if model.features.contains(name) || blockers.contains(qemuName(name)) {
                features.append(.init(name: name, policy: .disable))
            }
        }
        for name in model.removed where !features.contains(where: { $0.name == name }) {
            features.append(.init(name: name, policy: .disable))
        }
        return features
    }

    /// libvirt's score of a feature list, lower is better: the enabled count
    /// plus a growing penalty per disabled feature. The walk stops where the
    /// shrinking enabled count meets it, as libvirt's loop does, so trailing
    /// disabled features are not all counted; matching that keeps the choice
    /// identical.
    static func weight(_ features: [DomainSpec.CPU.Feature]) -> (total: Int, disabled: Int) {
        var enabled = features.count
        var disabled = 0
        var penalty = 2
        var index = 0
        while index < enabled {
            if features[index].policy == .disable {
                enabled -= 1
                disabled += penalty
                penalty += 1
            }
            index += 1
        }
        return (enabled + disabled, disabled)
    }

    static func matchesSignature(_ model: LibvirtCPUMap.Model, _ report: HostCPUReport) -> Bool {
        model.signatures.contains { signature in
            signature.family == report.family && signature.model == report.model
                && (signature.steppings?.contains(report.stepping) ?? true)
        }
    }
}

extension DomainSpec.CPU {
    /// This CPU with host-model replaced by its expansion, as libvirt starts
    /// it: a custom model with exact match, the XML's own `<feature>`s
    /// overriding or added after the expansion's.
    public func resolvingHostModel(_ expansion: HostCPUModel.Expansion) -> DomainSpec.CPU {
        var cpu = self
        cpu.mode = .custom
        cpu.model = expansion.model
        cpu.vendor = expansion.vendor
        var features = expansion.features
        for feature in self.features {
            if let index = features.firstIndex(where: { $0.name == feature.name }) {
                features[index].policy = feature.policy
            } else {
                features.append(feature)
            }
        }
        cpu.features = features
        return cpu
    }
}
