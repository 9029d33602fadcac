import Foundation
import Testing
@testable import ShimKit

/// `<cpu mode='host-model'>` decided as libvirt 9.0 decides it. The expected
/// answers are libvirt's own: its domain capabilities and `-cpu` for the same
/// QEMU (Debian 12's 7.2 under TCG), and the scores its debug log printed.
@Suite struct HostCPUModelTests {
    /// QEMU 7.2's replies for `max` under TCG, recorded with -machine none.
    static func recordedReport(_ file: String = "qemu-tcg-max.json") throws -> HostCPUReport {
        let text = try Fixtures.read(Fixtures.directory + "/cpu/" + file)
        let recorded = try JSONValue.parse(text)
        return try QEMUCPUProbe.decode(
            expansion: try #require(recorded["expansion"]), definitions: try #require(recorded["definitions"]))
    }

    /// What libvirt 9.0 ran for `<cpu mode='host-model'/>` with type='qemu' here.
    static let libvirtCPU =
        "EPYC,acpi=on,ss=on,monitor=on,hypervisor=on,erms=on,mpx=on,pcommit=on,clwb=on,umip=on,pku=on,vaes=on,"
        + "la57=on,pks=on,3dnowext=on,3dnow=on,npt=on,vgif=on,svme-addr-chk=on,vme=off,rdseed=off,sha-ni=off,"
        + "xsavec=off,fxsr-opt=off,misalignsse=off,3dnowprefetch=off,osvw=off,topoext=off,nrip-save=off"

    @Test func tcgHostModelIsLibvirtsEPYCWithTheSameFeatures() throws {
        let report = try Self.recordedReport()
        #expect(report.vendor == "AuthenticAMD")
        #expect((report.family, report.model, report.stepping) == (15, 107, 1))
        let expansion = try HostCPUModel.expand(report)
        #expect(expansion.model == "EPYC")
        #expect(expansion.vendor == "AMD")

        let xml = Self.domain("<cpu mode='host-model'><model fallback='allow'/></cpu>")
        var spec = try Fixtures.prepare(xml)
        #expect(spec.cpu.mode == .hostModel)
        spec.cpu = spec.cpu.resolvingHostModel(expansion)
        let argv = try QEMUCommandLine.plan(spec, context: .init(runDirectory: RunDirectory(root: "/run/vmshim", name: "hm"), now: 0, localTimeOffset: 0)).arguments
        let cpu = try #require(argv.firstIndex(of: "-cpu").map { argv[$0 + 1] })
        #expect(cpu == Self.libvirtCPU)
    }

    /// KVM on this project's AMD EPYC-Milan hosts: QEMU's `host` expansion,
    /// recorded, against what libvirt 9.0 put on `-cpu` for `type='kvm'`
    /// host-model (the start itself fails later: nested KVM).
    @Test func kvmHostModelIsLibvirtsEPYCMilan() throws {
        let report = try Self.recordedReport("qemu-kvm-host-epyc-milan.json")
        let expansion = try HostCPUModel.expand(report)
        var spec = try Fixtures.prepare(Self.domain("<cpu mode='host-model'/>"))
        spec.cpu = spec.cpu.resolvingHostModel(expansion)
        let argv = try QEMUCommandLine.plan(spec, context: .init(runDirectory: RunDirectory(root: "/run/vmshim", name: "hm"), now: 0, localTimeOffset: 0)).arguments
        let cpu = try #require(argv.firstIndex(of: "-cpu").map { argv[$0 + 1] })
        #expect(
            cpu == "EPYC-Milan,x2apic=on,tsc-deadline=on,hypervisor=on,tsc-adjust=on,stibp=on,arch-capabilities=on,"
                + "ssbd=on,cmp-legacy=on,rdctl-no=on,skip-l1dfl-vmentry=on,mds-no=on,pschange-mc-no=on,pni=off,"
                + "pclmulqdq=off,ssse3=off,fma=off,pcid=off,sse4.1=off,sse4.2=off,movbe=off,popcnt=off,aes=off,xsave=off,"
                + "avx=off,f16c=off,rdrand=off,fsgsbase=off,bmi1=off,avx2=off,smep=off,bmi2=off,erms=off,invpcid=off,"
                + "rdseed=off,adx=off,smap=off,sha-ni=off,pku=off,rdpid=off,fsrm=off,xsaveopt=off,xsavec=off,xgetbv1=off,"
                + "xsaves=off,pdpe1gb=off,rdtscp=off,svm=off,abm=off,sse4a=off,perfctr-core=off,npt=off,nrip-save=off,"
                + "svme-addr-chk=off")
    }

    /// libvirt's scores from its debug log for the same report: EPYC 43
    /// (23 enabled, penalty 20), EPYC-Milan 113 (23, 90), Opteron_G3 45
    /// (43, 2). The enabled count is libvirt's loop, which stops early.
    @Test func candidatesAreWeighedLikeLibvirt() throws {
        let report = try Self.recordedReport()
        let host = Set(LibvirtCPUMap.features.filter { report.features.contains(HostCPUModel.qemuName($0)) })
        func weight(_ name: String) throws -> (Int, Int) {
            let model = try #require(LibvirtCPUMap.models.first { $0.name == name })
            let features = HostCPUModel.listing(model, host: host, blockers: Set(report.models[name] ?? []))
            let result = HostCPUModel.weight(features)
            return (result.total, result.disabled)
        }
        #expect(try weight("EPYC") == (43, 20))
        #expect(try weight("EPYC-Milan") == (113, 90))
        #expect(try weight("EPYC-IBPB") == (50, 27))
        #expect(try weight("Opteron_G3") == (45, 2))
        #expect(try weight("qemu64") == (48, 0))
    }

    /// A CPU whose family and model one of libvirt's models names gets that
    /// model even when another lists fewer features.
    @Test func aMatchingSignatureWins() throws {
        var report = try Self.recordedReport()
        (report.family, report.model, report.stepping) = (25, 1, 1)  // EPYC-Milan's
        #expect(try HostCPUModel.expand(report).model == "EPYC-Milan")
        report.vendor = "GenuineIntel"  // AMD models are skipped for an Intel CPU
        #expect(try HostCPUModel.expand(report).model != "EPYC-Milan")
    }

    /// The XML's own features override the expansion's or follow it, and a
    /// QEMU with none of the map's models is a clear error.
    @Test func userFeaturesAndMissingModels() throws {
        let report = try Self.recordedReport()
        let xml = Self.domain(
            "<cpu mode='host-model'><feature policy='disable' name='la57'/><feature policy='require' name='x2apic'/></cpu>")
        let spec = try Fixtures.prepare(xml)
        let cpu = spec.cpu.resolvingHostModel(try HostCPUModel.expand(report))
        #expect(cpu.mode == .custom)
        #expect(cpu.features.first { $0.name == "la57" }?.policy == .disable)
        #expect(cpu.features.last == DomainSpec.CPU.Feature(name: "x2apic", policy: .require))

        var bare = report
        bare.models = [:]
        #expect(throws: ShimError.self) { try HostCPUModel.expand(bare) }
        #expect(throws: ShimError.self) {
            try QEMUCommandLine.plan(spec, context: .init(runDirectory: RunDirectory(root: "/run/vmshim", name: "hm"), now: 0, localTimeOffset: 0))
        }
    }

    /// The live XML shows the custom CPU host-model became, as `virsh
    /// dumpxml` does, and parses back to the same `-cpu`.
    @Test func liveXMLKeepsTheExpandedCPU() throws {
        let xml = Self.domain(
            "<cpu mode='host-model' check='partial'><model fallback='allow'/><topology sockets='1' dies='1' cores='2' threads='1'/></cpu>",
            vcpus: 2)
        var spec = try Fixtures.prepare(xml)
        spec.cpu = spec.cpu.resolvingHostModel(try HostCPUModel.expand(try Self.recordedReport()))
        let live = try LiveXML.render(source: xml, file: "hm.xml", spec: spec, runtime: .init())
        #expect(live.contains("<cpu mode='custom' check='full' match='exact'>"), "\(live)")
        #expect(live.contains("<model fallback='forbid'>EPYC</model>"), "\(live)")
        #expect(live.contains("<vendor>AMD</vendor>"), "\(live)")
        let again = try Fixtures.prepare(live, file: "live.xml")
        #expect(again.cpu.mode == .custom)
        #expect(again.cpu.model == "EPYC")
        #expect(again.cpu.features == spec.cpu.features)
        #expect(again.cpu.topology == spec.cpu.topology)
    }

    static func domain(_ cpu: String, vcpus: Int = 1) -> String {
        """
        <domain type='qemu'>
          <name>hm</name>
          <uuid>3c7c2a4e-6a55-4c4c-9d5e-8a1d7f1c2b01</uuid>
          <memory unit='MiB'>128</memory>
          <vcpu>\(vcpus)</vcpu>
          <os><type arch='x86_64' machine='q35'>hvm</type></os>
          \(cpu)
          <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
        </domain>
        """
    }
}
