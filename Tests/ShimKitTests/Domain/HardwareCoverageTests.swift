import Foundation
import Testing
@testable import ShimKit

/// Constructs the libvirt conformance suite brought in: each as libvirt 9.0
/// writes it on argv (`Tests/conformance` checks the guest-visible result
/// against a real libvirt).
@Suite struct HardwareCoverage {
    /// `xml` is refused with a message containing `fragment`.
    func expectRefusal(_ xml: String, saying fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try Fixtures.prepare(xml)
            Issue.record("accepted: \(xml)", sourceLocation: sourceLocation)
        } catch let error as ShimError {
            #expect(error.message.contains(fragment), "\(error.message)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("not a ShimError: \(error)", sourceLocation: sourceLocation)
        }
    }

    func devices(_ plan: LaunchPlan) -> [String] {
        plan.arguments.indices.dropLast().filter { plan.arguments[$0] == "-device" }.map { plan.arguments[$0 + 1] }
    }

    @Test func cpusetIsParsedLikeLibvirt() throws {
        #expect(DomainParser.parseCPUSet("0-3,^2,6") == [0, 1, 3, 6])
        #expect(DomainParser.parseCPUSet("1") == [1])
        for bad in ["", "a", "3-1", "^1", "0-8192", "1,,2"] {
            #expect(DomainParser.parseCPUSet(bad) == nil, "\(bad)")
        }
        let xml = domainXML().replacingOccurrences(of: "<vcpu>1</vcpu>", with: "<vcpu cpuset='0-1,^1'>1</vcpu>")
        let spec = try Fixtures.prepare(xml)
        #expect(spec.vcpus.cpusetCPUs == [0] && spec.vcpus.cpuset == "0-1,^1")
        let bad = domainXML().replacingOccurrences(of: "<vcpu>1</vcpu>", with: "<vcpu cpuset='x'>1</vcpu>")
        #expect(throws: ShimError.self) { try Fixtures.prepare(bad) }
    }

    @Test func scsiDisksGetLibvirtsAddressesAliasesAndControllers() throws {
        let xml = domainXML(devices: """
                <disk type='file' device='disk'><source file='/a'/><target dev='sdi'/></disk>
                <disk type='file' device='cdrom'><target dev='sda' bus='scsi'/></disk>
                <controller type='scsi' index='1' model='virtio-scsi'><driver queues='2' ioeventfd='on'/></controller>
            """)
        let plan = try Fixtures.plan(xml)
        let lines = devices(plan)
        // sd* defaults to the scsi bus; sdi (index 8) is controller 1 unit 1 on a narrow bus.
        #expect(lines.contains(#"{"driver":"lsi","id":"scsi0","bus":"pci.0","addr":"0x3"}"#), "\(lines)")
        #expect(lines.contains(#"{"driver":"virtio-scsi-pci","id":"scsi1","num_queues":2,"ioeventfd":true,"bus":"pci.0","addr":"0x2"}"#), "\(lines)")
        #expect(lines.contains { $0.hasPrefix(#"{"driver":"scsi-cd","bus":"scsi0.0","scsi-id":0,"device_id":"drive-scsi0-0-0","id":"scsi0-0-0""#) }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix(#"{"driver":"scsi-hd","bus":"scsi1.0","channel":0,"scsi-id":0,"lun":1,"device_id":"drive-scsi1-0-0-1","drive":"#) }, "\(lines)")
    }

    @Test func usbDisksTakePortsBeforeInputDevices() throws {
        let xml = domainXML(devices: """
                <input type='tablet' bus='usb'/>
                <disk type='file' device='disk'><source file='/a'/><target dev='sdb' bus='usb' removable='on'/></disk>
            """)
        let lines = devices(try Fixtures.plan(xml))
        #expect(lines.contains { $0.contains(#""driver":"usb-storage","bus":"usb.0","port":"1""#) && $0.contains(#""id":"usb-disk1""#) && $0.hasSuffix(#""removable":true}"#) }, "\(lines)")
        #expect(lines.contains { $0.contains(#""driver":"usb-tablet""#) && $0.contains(#""port":"2""#) }, "\(lines)")
    }

    @Test func watchdogsAndTheirAction() throws {
        let isa = try Fixtures.plan(domainXML(devices: "    <watchdog model='ib700' action='poweroff'/>"))
        let args = isa.arguments
        let index = try #require(args.firstIndex(of: #"{"driver":"ib700","id":"watchdog0"}"#))
        #expect(args[index + 1] == "-watchdog-action" && args[index + 2] == "poweroff")
        let pci = try Fixtures.plan(domainXML(devices: "    <watchdog model='i6300esb'/>"))
        #expect(devices(pci).contains { $0.hasPrefix(#"{"driver":"i6300esb","id":"watchdog0","bus":"pci.0""#) })
        #expect(pci.arguments.contains("reset"))
    }

    @Test func virtioNetDriverKnobsComeBeforeTheNetdev() throws {
        let xml = domainXML(devices: """
                <interface type='user'><mac address='52:54:00:00:00:09'/><model type='virtio'/><driver name='qemu' txmode='timer' event_idx='off' rx_queue_size='512'/><mtu size='9000'/></interface>
            """)
        let lines = devices(try Fixtures.plan(xml))
        #expect(lines.contains(#"{"driver":"virtio-net-pci","tx":"timer","event_idx":false,"rx_queue_size":512,"host_mtu":9000,"netdev":"hostnet0","id":"net0","mac":"52:54:00:00:00:09","bus":"pci.0","addr":"0x2"}"#), "\(lines)")
    }

    @Test func floppyControllerAndTimerCatchup() throws {
        let pc = domainXML(devices: "    <controller type='fdc' index='0'/>", extra: """
              <clock offset='utc'><timer name='pit' tickpolicy='catchup'><catchup threshold='123'/></timer><timer name='hpet' tickpolicy='catchup'/></clock>
            """)
        let plan = try Fixtures.plan(pc)
        #expect(!plan.arguments.contains { $0.contains("lost_tick_policy") })
        let q35 = domainXML(devices: "    <controller type='fdc' index='0'/>", machine: "q35")
        #expect(throws: ShimError.self) { try Fixtures.plan(q35) }
    }

    @Test func ioh3420RootPorts() throws {
        let xml = domainXML(devices: """
                <controller type='pci' index='0' model='pcie-root'/>
                <controller type='pci' index='1' model='pcie-root-port'><model name='ioh3420'/><target chassis='40' port='0x1a'/></controller>
            """, machine: "q35")
        #expect(devices(try Fixtures.plan(xml)).contains { $0.hasPrefix(#"{"driver":"ioh3420","port":26,"chassis":40,"id":"pci.1""#) })
    }

    @Test func iothreadsAndTheDisksAndControllersUsingThem() throws {
        let xml = domainXML(devices: """
                <disk type='file' device='disk'><source file='/a'/><target dev='vda'/><driver name='qemu' iothread='5' queues='2'/></disk>
                <controller type='scsi' index='0' model='virtio-scsi'><driver iothread='1'/></controller>
            """, extra: "  <iothreadids><iothread id='5'/></iothreadids><iothreads>2</iothreads>")
        let plan = try Fixtures.plan(xml)
        let objects = plan.arguments.indices.dropLast().filter { plan.arguments[$0] == "-object" }.map { plan.arguments[$0 + 1] }
        #expect(objects.filter { $0.contains("iothread") } == [
            #"{"qom-type":"iothread","id":"iothread5"}"#, #"{"qom-type":"iothread","id":"iothread1"}"#,
        ])
        let lines = devices(plan)
        #expect(lines.contains { $0.hasPrefix(#"{"driver":"virtio-blk-pci","iothread":"iothread5","num-queues":2,"#) }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix(#"{"driver":"virtio-scsi-pci","id":"scsi0","iothread":"iothread1","#) }, "\(lines)")
        let undefined = xml.replacingOccurrences(of: "iothread='5' queues", with: "iothread='7' queues")
        #expect(throws: ShimError.self) { try Fixtures.plan(undefined) }
        let mapping = domainXML(devices: """
                <disk type='file' device='disk'><source file='/a'/><target dev='vda'/><driver name='qemu'><iothreads><iothread id='1'/></iothreads></driver></disk>
            """, extra: "  <iothreads>1</iothreads>")
        #expect(throws: ShimError.self) { try Fixtures.plan(mapping) }
    }

    @Test func usbPortsAreCountedLikeLibvirt() throws {
        let three = domainXML(devices: """
                <input type='tablet' bus='usb'/>
                <input type='mouse' bus='usb'/>
                <input type='keyboard' bus='usb'/>
            """)
        // piix3-uhci has two ports: libvirt adds a hub on port 1 and fills
        // the controller's free port before the hub's.
        let hubbed = devices(try Fixtures.plan(three)).filter { $0.contains("usb.0") }
        #expect(hubbed == [
            #"{"driver":"usb-hub","id":"hub0","bus":"usb.0","port":"1"}"#,
            #"{"driver":"usb-tablet","id":"input0","bus":"usb.0","port":"2"}"#,
            #"{"driver":"usb-mouse","id":"input1","bus":"usb.0","port":"1.1"}"#,
            #"{"driver":"usb-kbd","id":"input2","bus":"usb.0","port":"1.2"}"#,
        ])
        let clash = domainXML(devices: """
                <input type='tablet' bus='usb'><address type='usb' bus='0' port='1'/></input>
                <disk type='file' device='disk'><source file='/a'/><target dev='sdb' bus='usb'/><address type='usb' bus='0' port='1'/></disk>
            """)
        #expect(throws: ShimError.self) { try Fixtures.plan(clash) }
    }

    /// What libvirt 9.0 gave for nine USB disks on the pc machine's two-port
    /// UHCI: two hubs, the first filled before the second; an explicit hub
    /// keeps its port and nested addresses need their hub.
    @Test func usbHubsAsLibvirtAddsThem() throws {
        let letters = "bcdefghij".map(String.init)
        let nine = domainXML(devices: letters.map {
            "    <disk type='file' device='disk'><source file='/var/lib/\($0).img'/><target dev='sd\($0)' bus='usb'/></disk>"
        }.joined(separator: "\n"))
        let usb = devices(try Fixtures.plan(nine)).filter { $0.contains("usb.0") }
        #expect(usb.prefix(2) == [
            #"{"driver":"usb-hub","id":"hub0","bus":"usb.0","port":"1"}"#, #"{"driver":"usb-hub","id":"hub1","bus":"usb.0","port":"2"}"#,
        ])
        let ports = usb.dropFirst(2).compactMap { line in
            line.components(separatedBy: #""port":""#).last?.components(separatedBy: "\"").first
        }
        #expect(ports == ["1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "1.8", "2.1"])

        let explicit = domainXML(devices: """
                <hub type='usb'/>
                <input type='tablet' bus='usb'/>
            """)
        #expect(devices(try Fixtures.plan(explicit)).filter { $0.contains("usb.0") } == [
            #"{"driver":"usb-hub","id":"hub0","bus":"usb.0","port":"1"}"#,
            #"{"driver":"usb-tablet","id":"input0","bus":"usb.0","port":"2"}"#,
        ])
        // The live XML writes the hubs libvirt adds, and parses back to the same ports.
        let spec = try Fixtures.prepare(nine)
        let live = try LiveXML.render(source: nine, file: "t.xml", spec: spec, runtime: .init())
        #expect(live.contains("<hub type='usb'>"), "\(live)")
        #expect(try Fixtures.plan(live).arguments == (try Fixtures.plan(nine)).arguments)

        for (xml, fragment) in [
            ("<input type='tablet' bus='usb'><address type='usb' bus='0' port='1.3'/></input>", "no hub at port 1"),
            ("<hub type='usb'><address type='usb' bus='0' port='1'/></hub><input type='tablet' bus='usb'><address type='usb' bus='0' port='1.9'/></input>", "a USB hub has 8"),
            ("<controller type='usb' model='none'/><hub type='usb'/>", "needs a USB controller"),
        ] {
            expectRefusal(domainXML(devices: "    " + xml), saying: fragment)
        }
    }

    @Test func featuresVmportSmmAndPmu() throws {
        let xml = domainXML(extra: "  <features><acpi/><vmport state='off'/><smm state='on'/><pmu state='off'/></features>", machine: "q35")
        let args = try Fixtures.plan(xml).arguments
        let machine = try #require(args.firstIndex(of: "-machine").map { args[$0 + 1] })
        #expect(machine == "q35,usb=off,vmport=off,smm=on,dump-guest-core=off,memory-backend=pc.ram", "\(machine)")
        #expect(args.firstIndex(of: "-cpu").map { args[$0 + 1] } == "qemu64,pmu=off")
    }

    /// virt-manager's Windows XML: the enlightenments land on -cpu after the
    /// paravirtual clocks, in libvirt's order, then hv-crash, then pmu
    /// (each spelling checked against libvirt 9.0's argv).
    @Test func hypervEnlightenmentsAsLibvirtWritesThem() throws {
        let xml = domainXML(devices: "    <panic model='hyperv'/>", extra: """
              <features><acpi/><apic/><hyperv mode='custom'>
                <vendor_id state='on' value='KVM Hv'/><spinlocks state='on' retries='8191'/><relaxed state='on'/>
                <stimer state='on'><direct state='on'/></stimer><vapic state='on'/><evmcs state='off'/><synic state='on'/>
              </hyperv><pmu state='off'/></features>
              <clock offset='localtime'><timer name='hypervclock' present='yes'/><timer name='kvmclock' present='no'/></clock>
            """)
        let plan = try Fixtures.plan(xml)
        #expect(plan.arguments.firstIndex(of: "-cpu").map { plan.arguments[$0 + 1] }
            == "qemu64,hv-time=on,kvmclock=off,hv-relaxed=on,hv-vapic=on,hv-spinlocks=0x1fff,hv-synic=on,hv-stimer=on,hv-stimer-direct=on,hv-vendor-id=KVM Hv,hv-crash,pmu=off")
        // The hyperv panic notifier is no device.
        #expect(!devices(plan).contains { $0.contains("pvpanic") })
        let passthrough = domainXML(extra: "  <features><hyperv mode='passthrough'><relaxed state='on'/></hyperv></features>")
        #expect(try Fixtures.plan(passthrough).arguments.contains("qemu64,hv-passthrough=on,hv-relaxed=on"))

        for (bad, says) in [
            ("<spinlocks state='on' retries='100'/>", "below 4095"),
            ("<spinlocks state='on'/>", "needs retries"),
            ("<vendor_id state='on' value='thirteen chars'/>", "12 bytes"),
            ("<vendor_id state='on' value='ééééééé'/>", "12 bytes"),
            ("<relaxed/>", "missing attribute 'state'"),
            ("<emsr_bitmap state='on'/>", "hv-emsr-bitmap"),
            ("<tlbflush state='on'><extended state='on'/></tlbflush>", "newer than libvirt 9.0"),
        ] {
            let xml = domainXML(extra: "  <features><hyperv>\(bad)</hyperv></features>")
            #expect { try Fixtures.plan(xml) } throws: { error in
                let message = (error as? ShimError)?.message ?? ""
                return message.contains(says) && message.contains("<")
            }
        }
        let addressed = domainXML(devices: "    <panic model='hyperv'><address type='isa' iobase='0x505'/></panic>")
        #expect(throws: ShimError.self) { try Fixtures.plan(addressed) }
    }

    /// oVirt's DIMMs and KubeVirt's virtio-mem under <maxMemory>, spelled as
    /// libvirt 9.0 writes them (checked against it in real-tools/memory-hotplug).
    @Test func memoryHotplugWithDIMMsAndVirtioMem() throws {
        func xml(_ devices: String, maxMemory: String = "<maxMemory slots='4' unit='MiB'>2048</maxMemory>",
                 numa: String = "<cpu><numa><cell id='0' cpus='0' memory='256' unit='MiB'/></numa></cpu>",
                 features: String = "<features><acpi/></features>") -> String {
            domainXML(devices: devices, extra: maxMemory + numa + features, machine: "q35")
        }
        let memory = """
                <memory model='dimm'><target><size unit='MiB'>255</size><node>0</node></target><address type='dimm' slot='1'/></memory>
                <memory model='dimm'><target><size unit='MiB'>128</size><node>0</node></target></memory>
                <memory model='virtio-mem'><target><size unit='MiB'>256</size><node>0</node><block unit='MiB'>2</block><requested unit='MiB'>64</requested></target></memory>
            """
        let plan = try Fixtures.plan(xml(memory))
        let args = plan.arguments
        #expect(args.firstIndex(of: "-m").map { args[$0 + 1] } == "size=262144k,slots=4,maxmem=2097152k")
        // 255 MiB is aligned to 2 MiB; the DIMM without an address takes the first free slot.
        #expect(args.contains(#"{"qom-type":"memory-backend-ram","id":"memdimm1","size":268435456}"#), "\(args)")
        #expect(args.contains(#"{"driver":"pc-dimm","node":0,"memdev":"memdimm1","id":"dimm1","slot":1}"#))
        #expect(args.contains(#"{"driver":"pc-dimm","node":0,"memdev":"memdimm0","id":"dimm0","slot":0}"#))
        #expect(args.contains(#"{"qom-type":"memory-backend-ram","id":"memvirtiomem0","reserve":false,"size":268435456}"#))
        #expect(devices(plan).contains {
            $0.hasPrefix(#"{"driver":"virtio-mem-pci","node":0,"block-size":2097152,"requested-size":67108864,"memdev":"memvirtiomem0","id":"virtiomem0","bus":"pci."#)
        }, "\(devices(plan))")
        // <memory> becomes boot memory plus the devices; the balloon target defaults to it.
        let spec = try Fixtures.prepare(xml(memory))
        #expect(spec.memory.totalKiB == (256 + 256 + 128 + 256) * 1024)
        #expect(spec.memory.currentKiB == spec.memory.totalKiB)

        let dimm = "<memory model='dimm'><target><size unit='MiB'>128</size><node>0</node></target></memory>"
        for (bad, says) in [
            (xml(dimm, maxMemory: ""), "needs <maxMemory"),
            (xml(dimm, numa: ""), "NUMA cell"),
            (xml(dimm, features: ""), "<acpi/>"),
            (xml(dimm + dimm, maxMemory: "<maxMemory slots='1' unit='MiB'>2048</maxMemory>"), "raise slots"),
            (xml(dimm, maxMemory: "<maxMemory slots='4' unit='MiB'>300</maxMemory>"), "exceed <maxMemory>"),
            (xml("<memory model='dimm'><target><size unit='MiB'>128</size></target></memory>"), "target NUMA node"),
            (xml("<memory model='dimm'><target><size unit='MiB'>128</size><node>3</node></target></memory>"), "NUMA node 3"),
            (xml("<memory model='dimm'><target><size unit='MiB'>128</size><node>0</node></target><address type='dimm' slot='4'/></memory>"), "slot 4"),
            (xml("<memory model='virtio-mem'><target><size unit='MiB'>128</size><node>0</node><block unit='KiB'>1024</block></target></memory>"), "power of two"),
            (xml("<memory model='virtio-mem'><target><size unit='MiB'>128</size><node>0</node><block unit='MiB'>2</block><requested unit='MiB'>3</requested></target></memory>"), "multiple of the block"),
            (xml("<memory model='nvdimm'><target><size unit='MiB'>128</size><node>0</node></target></memory>"), "nvdimm"),
        ] {
            #expect { try Fixtures.plan(bad) } throws: { error in
                ((error as? ShimError)?.message ?? "").contains(says)
            }
        }
    }

    /// virt-manager's defaults: SPICE with its agent channel, USB
    /// redirection and SPICE audio, as libvirt 9.0 writes them.
    @Test func spiceGraphicsChannelsAndUSBRedirection() throws {
        let xml = domainXML(devices: """
                <controller type='usb' index='0' model='qemu-xhci' ports='15'/>
                <channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>
                <input type='tablet' bus='usb'/>
                <graphics type='spice' port='5931' autoport='no'><listen type='address' address='0.0.0.0'/><image compression='auto_glz'/><jpeg compression='never'/><zlib compression='always'/><playback compression='off'/><streaming mode='filter'/><clipboard copypaste='no'/><mouse mode='client'/><filetransfer enable='no'/><gl enable='no'/></graphics>
                <sound model='ich6'/>
                <redirdev bus='usb' type='spicevmc'/>
                <redirdev bus='usb' type='spicevmc'><address type='usb' bus='0' port='5'/></redirdev>
            """, machine: "q35")
        let plan = try Fixtures.plan(xml)
        let args = plan.arguments
        #expect(args.firstIndex(of: "-spice").map { args[$0 + 1] }
            == "port=5931,addr=0.0.0.0,agent-mouse=on,disable-ticketing=on,image-compression=auto_glz,jpeg-wan-compression=never,zlib-glz-wan-compression=always,playback-compression=off,streaming-video=filter,disable-copy-paste=on,disable-agent-file-xfer=on,seamless-migration=on")
        // SPICE carries the sound unless <audio> says otherwise.
        #expect(args.contains(#"{"id":"audio1","driver":"spice"}"#))
        #expect(args.contains("spicevmc,id=charchannel0,name=vdagent"))
        #expect(args.contains("spicevmc,id=charredir0,name=usbredir") && args.contains("spicevmc,id=charredir1,name=usbredir"))
        // The tablet takes port 1, the first redirdev the next free one, the second its own.
        #expect(devices(plan).contains(#"{"driver":"usb-redir","chardev":"charredir0","id":"redir0","bus":"usb.0","port":"2"}"#), "\(devices(plan))")
        #expect(devices(plan).contains(#"{"driver":"usb-redir","chardev":"charredir1","id":"redir1","bus":"usb.0","port":"5"}"#))
        #expect(!args.contains("-vnc"))

        // One VNC and one SPICE display: document order, distinct ports; the
        // SPICE agent channel gets its name when it has none.
        let both = domainXML(devices: "    <channel type='spicevmc'><target type='virtio'/></channel><graphics type='vnc' autoport='yes'/><graphics type='spice' autoport='yes'/>")
        let bothArgs = try Fixtures.plan(both).arguments
        let vncAt = try #require(bothArgs.firstIndex(of: "-vnc")), spiceAt = try #require(bothArgs.firstIndex(of: "-spice"))
        #expect(vncAt < spiceAt && bothArgs[vncAt + 1] == "127.0.0.1:0,audiodev=audio1" && bothArgs[spiceAt + 1].hasPrefix("port=5901,"))
        #expect(bothArgs.contains { $0.contains(#""name":"com.redhat.spice.0""#) })
        let twice = domainXML(devices: "    <graphics type='spice'/><graphics type='spice'/>")
        #expect(throws: ShimError.self) { try Fixtures.plan(twice) }

        let none = domainXML(devices: "    <graphics type='spice'><listen type='none'/></graphics><audio id='1' type='none'/>")
        let noneArgs = try Fixtures.plan(none).arguments
        #expect(noneArgs.firstIndex(of: "-spice").map { noneArgs[$0 + 1] } == "port=0,disable-ticketing=on,seamless-migration=on")
        #expect(noneArgs.contains(#"{"id":"audio1","driver":"none"}"#))
        let socket = domainXML(devices: "    <graphics type='spice'><listen type='socket' socket='/run/s.sock'/></graphics>")
        #expect(try Fixtures.plan(socket).arguments.contains("unix,addr=/run/s.sock,disable-ticketing=on,seamless-migration=on"))

        for (bad, says) in [
            (domainXML(devices: "    <channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>"), "needs <graphics type='spice'>"),
            (domainXML(devices: "    <redirdev bus='usb' type='spicevmc'/><graphics type='vnc'/>"), "needs <graphics type='spice'>"),
            (domainXML(devices: "    <graphics type='spice' passwd='x'/>"), "SPICE passwords"),
            (domainXML(devices: "    <graphics type='spice'><gl enable='yes'/></graphics>"), "OpenGL"),
            (domainXML(devices: "    <graphics type='spice'><image compression='best'/></graphics>"), "must be one of"),
            (domainXML(devices: "    <graphics type='spice'/><redirdev bus='usb' type='tcp'><source mode='connect' host='h' service='1'/></redirdev>"), "only spicevmc"),
            (domainXML(devices: "    <serial type='spicevmc'/>"), "spicevmc channels"),
        ] {
            #expect { try Fixtures.plan(bad) } throws: { error in
                ((error as? ShimError)?.message ?? "").contains(says)
            }
        }
    }

    /// The passthrough guides' features, a virtio IOMMU and disk geometry,
    /// as libvirt 9.0 writes them (real-tools/passthrough-guide-q35).
    @Test func kvmFeaturesIOAPICVirtioIOMMUAndGeometry() throws {
        let xml = domainXML(devices: """
                <disk type='file' device='disk'><source file='/a'/><target dev='vda' bus='virtio'/><geometry cyls='1024' heads='16' secs='63'/></disk>
                <video><model type='vga'/></video>
                <iommu model='virtio'/>
            """, extra: """
              <features><acpi/><kvm><hidden state='on'/><poll-control state='on'/><pv-ipi state='off'/></kvm><ioapic driver='qemu'/><vmport state='off'/><pmu state='off'/></features>
            """, machine: "q35")
        let plan = try Fixtures.plan(xml)
        let args = plan.arguments
        #expect(args.firstIndex(of: "-cpu").map { args[$0 + 1] } == "qemu64,kvm=off,kvm-poll-control=on,kvm-pv-ipi=off,pmu=off")
        #expect(args.firstIndex(of: "-machine").map { args[$0 + 1] }
            == "q35,usb=off,vmport=off,kernel_irqchip=split,dump-guest-core=off,memory-backend=pc.ram")
        // Video at 00:01, root ports packed at 00:02, the IOMMU on the next free pcie.0 slot.
        #expect(devices(plan).contains(#"{"driver":"virtio-iommu","id":"iommu0","bus":"pcie.0","addr":"0x3"}"#), "\(devices(plan))")
        #expect(devices(plan).contains { $0.contains(#""bootindex":1,"cyls":1024,"heads":16,"secs":63}"#) }, "\(devices(plan))")
        // After write-cache, before serial (libvirt 9.0's argv for the same disk).
        let ide = domainXML(devices: "    <disk type='file' device='disk'><driver name='qemu' cache='writeback'/><source file='/a'/><target dev='hda' bus='ide'/><geometry cyls='16383' heads='16' secs='63' trans='lba'/><serial>ABC</serial></disk>")
        let ideDevices = devices(try Fixtures.plan(ide))
        #expect(ideDevices.contains { $0.hasSuffix(#""write-cache":"on","cyls":16383,"heads":16,"secs":63,"bios-chs-trans":"lba","serial":"ABC"}"#) }, "\(ideDevices)")

        for (bad, says) in [
            (domainXML(devices: "    <iommu model='virtio'/>"), "needs the q35"),
            (domainXML(devices: "    <iommu model='virtio'><driver caching_mode='on'/></iommu>", machine: "q35"), "no <driver>"),
            (domainXML(devices: "    <iommu model='smmuv3'/>", machine: "q35"), "smmuv3"),
            (domainXML(devices: "    <disk type='file' device='disk'><source file='/a'/><target dev='sda' bus='sata'/><geometry cyls='1' heads='1' secs='1' trans='lba'/></disk>", machine: "q35"), "only for ide"),
            (domainXML(devices: "    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><geometry cyls='1' heads='1' secs='1'/></disk>"), "not cdroms"),
            (domainXML(extra: "  <features><kvm><hint-dedicated state='on'/></kvm></features>"), "vcpupin"),
            (domainXML(extra: "  <features><ioapic driver='xen'/></features>"), "kvm or qemu"),
        ] {
            #expect { try Fixtures.plan(bad) } throws: { error in
                ((error as? ShimError)?.message ?? "").contains(says)
            }
        }
    }

    /// Floppies as libvirt 9.0 writes them: the drives on the floppy bus,
    /// their boot indexes on the controller (a -global on pc, an isa-fdc
    /// device on q35).
    @Test func floppyDisksOnPCAndQ35() throws {
        let pc = domainXML(devices: """
                <disk type='file' device='floppy'><source file='/f.img'/><target dev='fda'/><readonly/></disk>
                <disk type='file' device='floppy'><target dev='fdb' bus='fdc'/></disk>
            """).replacingOccurrences(of: "<os><type arch='x86_64' machine='pc'>hvm</type></os>",
                                      with: "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='fd'/><boot dev='hd'/></os>")
        let plan = try Fixtures.plan(pc)
        let args = plan.arguments
        #expect(args.contains("isa-fdc.bootindexA=1"), "\(args)")
        #expect(devices(plan).contains(#"{"driver":"floppy","unit":0,"drive":"libvirt-2-format","id":"fdc0-0-0"}"#), "\(devices(plan))")
        #expect(devices(plan).contains(#"{"driver":"floppy","unit":1,"id":"fdc0-0-1"}"#))
        #expect(args.contains { $0.contains(#""node-name":"libvirt-2-format","read-only":true"#) })
        #expect(!devices(plan).contains { $0.contains("isa-fdc") })

        let q35 = domainXML(devices: """
                <disk type='file' device='floppy'><source file='/f.img'/><target dev='fda'/><boot order='2'/></disk>
                <disk type='file' device='floppy'><source file='/g.img'/><target dev='fdb'/><boot order='1'/></disk>
            """, machine: "q35")
        let q35Plan = try Fixtures.plan(q35)
        #expect(devices(q35Plan).contains(#"{"driver":"isa-fdc","bootindexA":2,"bootindexB":1}"#), "\(devices(q35Plan))")
        #expect(try Fixtures.prepare(q35).devices.controllers.contains { $0.kind == .fdc && $0.implicit })

        for (bad, says) in [
            (domainXML(devices: "    <disk type='file' device='floppy'><source file='/f'/><target dev='fdc'/></disk>"), "fda or fdb"),
            (domainXML(devices: "    <disk type='file' device='floppy'><source file='/f'/><target dev='hda' bus='ide'/></disk>"), "needs bus='fdc'"),
            (domainXML(devices: "    <disk type='file' device='disk'><source file='/f'/><target dev='fda'/></disk>"), "for device='floppy'"),
            (domainXML(devices: "    <controller type='fdc'/>", machine: "q35"), "without a floppy disk"),
        ] {
            #expect { try Fixtures.plan(bad) } throws: { error in
                ((error as? ShimError)?.message ?? "").contains(says)
            }
        }
    }

    /// A multiqueue tap: one fd per queue pair on the netdev, mq and the
    /// vectors on the device between event_idx and the queue sizes.
    @Test func multiqueueTapsAsLibvirtWritesThem() throws {
        let xml = domainXML(devices: """
                <interface type='ethernet'><mac address='52:54:00:00:00:21'/><target dev='mq0'/><model type='virtio'/><driver name='qemu' txmode='iothread' ioeventfd='on' event_idx='off' queues='4' rx_queue_size='512'/></interface>
            """)
        let plan = try Fixtures.plan(xml)
        let netdev = try #require(plan.arguments.first { $0.contains(#""type":"tap""#) })
        let fds = plan.fds.filter {
            switch $0.resource {
            case .tap(_, _, _, _, let multiQueue): return multiQueue
            case .tapQueue: return true
            default: return false
            }
        }.map { String($0.childFD) }
        #expect(fds.count == 4)
        #expect(netdev == #"{"type":"tap","fds":"\#(fds.joined(separator: ":"))","id":"hostnet0"}"#, "\(netdev)")
        #expect(devices(plan).contains { $0.hasPrefix(#"{"driver":"virtio-net-pci","tx":"bh","ioeventfd":true,"event_idx":false,"mq":true,"vectors":10,"rx_queue_size":512,"netdev":"hostnet0""#) }, "\(devices(plan))")
        let e1000 = domainXML(devices: "    <interface type='ethernet'><model type='e1000'/><driver queues='2'/></interface>")
        #expect(throws: ShimError.self) { try Fixtures.plan(e1000) }
    }

    /// Huge pages as libvirt 9.0 backs them: a file backend on the hugetlbfs
    /// mount of the page size (a directory of the domain's own), or memfd's
    /// hugetlb; always preallocated.
    @Test func hugepagesAsLibvirtWritesThem() throws {
        func backends(_ backing: String, numa: Bool = false) throws -> [String] {
            let cells = numa ? "<cpu><numa><cell id='0' cpus='0' memory='64' unit='MiB'/><cell id='1' cpus='1' memory='64' unit='MiB'/></numa></cpu>" : ""
            let xml = domainXML(extra: "<memoryBacking>\(backing)</memoryBacking>" + cells)
            let args = try Fixtures.plan(numa ? xml.replacingOccurrences(of: "<vcpu>1</vcpu>", with: "<vcpu>2</vcpu>") : xml).arguments
            return args.indices.dropLast().filter { args[$0] == "-object" && args[$0 + 1].contains("memory-backend") }.map { args[$0 + 1] }
        }
        #expect(try backends("<hugepages/>") == [
            #"{"qom-type":"memory-backend-file","id":"pc.ram","mem-path":"/dev/hugepages/vmshim/t","x-use-canonical-path-for-ramblock-id":false,"prealloc":true,"size":134217728}"#,
        ])
        #expect(try backends("<hugepages><page size='1' unit='GiB'/></hugepages><access mode='shared'/>") == [
            #"{"qom-type":"memory-backend-file","id":"pc.ram","mem-path":"/dev/hugepages1G/vmshim/t","share":true,"x-use-canonical-path-for-ramblock-id":false,"prealloc":true,"size":134217728}"#,
        ])
        #expect(try backends("<hugepages/><source type='memfd'/>") == [
            #"{"qom-type":"memory-backend-memfd","id":"pc.ram","hugetlb":true,"hugetlbsize":2097152,"share":false,"x-use-canonical-path-for-ramblock-id":false,"prealloc":true,"size":134217728}"#,
        ])
        // The launcher makes the domain's directory on the mount.
        #expect(try Fixtures.plan(domainXML(extra: "<memoryBacking><hugepages/></memoryBacking>")).directories == ["/dev/hugepages/vmshim/t"])
        #expect(try backends("<hugepages/><allocation mode='immediate'/>", numa: true) == [
            #"{"qom-type":"memory-backend-file","id":"ram-node0","mem-path":"/dev/hugepages/vmshim/t","prealloc":true,"size":67108864}"#,
            #"{"qom-type":"memory-backend-file","id":"ram-node1","mem-path":"/dev/hugepages/vmshim/t","prealloc":true,"size":67108864}"#,
        ])
        for (bad, says) in [
            ("<hugepages><page size='16' unit='MiB'/></hugepages>", "no hugetlbfs is mounted for 16384 KiB"),
            ("<hugepages><page size='2048' nodeset='0'/></hugepages>", "nodeset"),
            ("<hugepages><page size='2048'/><page size='1048576'/></hugepages>", "more than one size"),
        ] {
            #expect { try Fixtures.plan(domainXML(extra: "<memoryBacking>\(bad)</memoryBacking>")) } throws: { error in
                ((error as? ShimError)?.message ?? "").contains(says)
            }
        }
        #expect(Hugepages.parseMounts(
            "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\nnone /mnt/huge\\0401G hugetlbfs rw,pagesize=1024M 0 0\nproc /proc proc rw 0 0\nhugetlbfs /x hugetlbfs rw 0 0\n",
            defaultPageSizeKiB: 2048) == [
                Hugepages.Mount(path: "/dev/hugepages", pageSizeKiB: 2048), Hugepages.Mount(path: "/mnt/huge 1G", pageSizeKiB: 1_048_576),
                Hugepages.Mount(path: "/x", pageSizeKiB: 2048),
            ])
    }

    /// Access modes on guest RAM, libvirt 9.0's choices (each expectation is
    /// its argv for the same XML): memAccess or <access> on anonymous memory
    /// makes a file backend (in the run directory's ram/), memfd takes share
    /// per node, and preallocation goes on every node.
    @Test func numaMemAccessAndAccessModes() throws {
        func backends(_ backing: String, cell0: String = "", cell1: String = "", numa: Bool = true) throws -> [String] {
            var xml = domainXML(extra: backing + (numa ? """
                <cpu><numa><cell id='0' cpus='0' memory='64' unit='MiB' \(cell0)/><cell id='1' cpus='1' memory='64' unit='MiB' \(cell1)/></numa></cpu>
                """ : ""))
            xml = xml.replacingOccurrences(of: "<vcpu>1</vcpu>", with: numa ? "<vcpu>2</vcpu>" : "<vcpu>1</vcpu>")
            let plan = try Fixtures.plan(xml)
            let args = plan.arguments
            return args.indices.dropLast().filter { args[$0] == "-object" && args[$0 + 1].contains("memory-backend") }.map { args[$0 + 1] }
        }
        #expect(try backends("", cell0: "memAccess='shared'") == [
            #"{"qom-type":"memory-backend-file","id":"ram-node0","mem-path":"/run/vmshim/t/ram/ram-node0","share":true,"size":67108864}"#,
            #"{"qom-type":"memory-backend-ram","id":"ram-node1","size":67108864}"#,
        ])
        #expect(try backends("<memoryBacking><source type='memfd'/><access mode='shared'/><allocation mode='immediate'/></memoryBacking>", cell1: "memAccess='private'") == [
            #"{"qom-type":"memory-backend-memfd","id":"ram-node0","share":true,"prealloc":true,"size":67108864}"#,
            #"{"qom-type":"memory-backend-memfd","id":"ram-node1","share":false,"prealloc":true,"size":67108864}"#,
        ])
        #expect(try backends("<memoryBacking><access mode='shared'/></memoryBacking>") == [
            #"{"qom-type":"memory-backend-file","id":"ram-node0","mem-path":"/run/vmshim/t/ram/ram-node0","share":true,"size":67108864}"#,
            #"{"qom-type":"memory-backend-file","id":"ram-node1","mem-path":"/run/vmshim/t/ram/ram-node1","share":true,"size":67108864}"#,
        ])
        #expect(try backends("<memoryBacking><access mode='shared'/></memoryBacking>", numa: false) == [
            #"{"qom-type":"memory-backend-file","id":"pc.ram","mem-path":"/run/vmshim/t/ram/pc.ram","share":true,"x-use-canonical-path-for-ramblock-id":false,"size":134217728}"#,
        ])
        // The launcher makes ram/ only when a backend needs it.
        #expect(try Fixtures.plan(domainXML(extra: "<memoryBacking><access mode='private'/></memoryBacking>")).directories == ["/run/vmshim/t/ram"])
        #expect(try Fixtures.plan(domainXML()).directories.isEmpty)
        #expect(throws: ShimError.self) { try backends("", cell0: "memAccess='public'") }
    }

    /// type='user' with its own subnets, spelled as libvirt 9.0 passes them.
    @Test func userNetworkingWithCustomSubnets() throws {
        let xml = domainXML(devices: """
                <interface type='user'><ip family='ipv4' address='172.17.2.0' prefix='24'/><ip family='ipv6' address='2001:db8::' prefix='64'/></interface>
                <interface type='user'><ip address='10.1.2.3'/></interface>
            """)
        let args = try Fixtures.plan(xml).arguments
        #expect(args.contains(#"{"type":"user","net":"172.17.2.0/24","ipv6-prefix":"2001:db8::","ipv6-prefixlen":64,"id":"hostnet0"}"#), "\(args)")
        #expect(args.contains(#"{"type":"user","net":"10.1.2.3","id":"hostnet1"}"#))
        for bad in [
            "<interface type='user'><ip address='300.1.2.3'/></interface>",
            "<interface type='user'><ip address='10.0.0.0'/><ip address='10.1.0.0'/></interface>",
            "<interface type='ethernet'><ip address='10.0.0.1'/></interface>",
        ] {
            #expect(throws: ShimError.self, "\(bad)") { try Fixtures.plan(domainXML(devices: "    " + bad)) }
        }
    }

    /// USB2 as virt-install writes it for older guests: an ich9-ehci1 with
    /// three uhci companions in one slot (00:1d on q35), six ports.
    @Test func usb2CompanionControllers() throws {
        let usb2 = """
                <controller type='usb' index='0' model='ich9-ehci1'/>
                <controller type='usb' index='0' model='ich9-uhci1'><master startport='0'/></controller>
                <controller type='usb' index='0' model='ich9-uhci2'><master startport='2'/></controller>
                <controller type='usb' index='0' model='ich9-uhci3'><master startport='4'/></controller>
                <input type='tablet' bus='usb'/>
            """
        let pc = devices(try Fixtures.plan(domainXML(devices: "    <interface type='user'/>\n" + usb2)))
        #expect(pc.contains(#"{"driver":"ich9-usb-ehci1","id":"usb","bus":"pci.0","addr":"0x3.0x7"}"#), "\(pc)")
        #expect(pc.contains(#"{"driver":"ich9-usb-uhci1","masterbus":"usb.0","firstport":0,"bus":"pci.0","multifunction":true,"addr":"0x3"}"#))
        #expect(pc.contains(#"{"driver":"ich9-usb-uhci3","masterbus":"usb.0","firstport":4,"bus":"pci.0","addr":"0x3.0x2"}"#))
        let q35 = devices(try Fixtures.plan(domainXML(devices: usb2, machine: "q35")))
        #expect(q35.contains(#"{"driver":"ich9-usb-ehci1","id":"usb","bus":"pcie.0","addr":"0x1d.0x7"}"#), "\(q35)")
        #expect(q35.contains(#"{"driver":"ich9-usb-uhci2","masterbus":"usb.0","firstport":2,"bus":"pcie.0","addr":"0x1d.0x1"}"#))
        let ehci = devices(try Fixtures.plan(domainXML(devices: "    <controller type='usb' index='0' model='ehci'/>")))
        #expect(ehci.contains(#"{"driver":"usb-ehci","id":"usb","bus":"pci.0","addr":"0x2"}"#), "\(ehci)")

        // Seven devices on the EHCI's six ports: a hub on port 1, as libvirt adds it.
        let sevenTablets = (0..<7).map { _ in "<input type='tablet' bus='usb'/>" }.joined()
        let hubbed = devices(try Fixtures.plan(domainXML(devices: "    <controller type='usb' index='0' model='ich9-ehci1'/>" + sevenTablets)))
        #expect(hubbed.filter { $0.contains("usb.0") }.compactMap { $0.components(separatedBy: #""port":""#).last?.components(separatedBy: "\"").first }
            == ["1", "2", "3", "4", "5", "6", "1.1", "1.2"])
        for (bad, says) in [
            (domainXML(devices: "    <controller type='usb' index='0' model='ich9-uhci1'><master startport='0'/></controller>"), "needs an ich9-ehci1 master"),
            (domainXML(devices: "    <controller type='usb' index='0' model='qemu-xhci'><master startport='0'/></controller>"), "companion"),
        ] {
            #expect { try Fixtures.plan(bad) } throws: { error in
                ((error as? ShimError)?.message ?? "").contains(says)
            }
        }
    }

    @Test func kubevirtStyleDevices() throws {
        let xml = domainXML(devices: """
                <interface type='user'><mac address='02:42:ac:11:00:02'/><model type='virtio-non-transitional'/><rom enabled='no'/></interface>
                <disk type='file' device='disk' model='virtio-non-transitional'><source file='/a'/><target dev='vda' bus='virtio'/><driver name='qemu' error_policy='stop'/></disk>
                <disk type='file' device='disk'><source file='/b'/><target dev='vdb' bus='virtio'/><driver name='qemu' error_policy='enospace' rerror_policy='report'/></disk>
                <memballoon model='virtio-non-transitional'/>
                <rng model='virtio-non-transitional'><backend model='random'>/dev/urandom</backend></rng>
            """)
        let lines = devices(try Fixtures.plan(xml))
        #expect(lines.contains { $0.hasPrefix(#"{"driver":"virtio-net-pci-non-transitional","netdev""#) && $0.hasSuffix(#""romfile":""}"#) }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix(#"{"driver":"virtio-blk-pci-non-transitional""#) && $0.hasSuffix(#""werror":"stop","rerror":"stop"}"#) }, "\(lines)")
        #expect(lines.contains { $0.contains(#""id":"virtio-disk1""#) && $0.hasSuffix(#""werror":"enospc","rerror":"report"}"#) }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix(#"{"driver":"virtio-balloon-pci-non-transitional""#) })
        #expect(lines.contains { $0.hasPrefix(#"{"driver":"virtio-rng-pci-non-transitional""#) })
        let transitional = domainXML(devices: "    <disk type='file' device='disk' model='virtio-transitional'><source file='/a'/><target dev='vda'/></disk>")
        #expect(throws: ShimError.self) { try Fixtures.plan(transitional) }
        let disabledWithFile = domainXML(devices: "    <interface type='user'><rom enabled='no' file='/x'/></interface>")
        #expect(throws: ShimError.self) { try Fixtures.plan(disabledWithFile) }
    }

    @Test func networkCharacterDevicesAndParallelPortsAsLibvirtWritesThem() throws {
        let xml = domainXML(devices: """
                <serial type='tcp'><source mode='bind' host='127.0.0.1' service='4555'/><protocol type='telnet'/><target port='0'/></serial>
                <serial type='udp'><source mode='bind' host='127.0.0.1' service='4556'/><source mode='connect' host='127.0.0.1' service='4557'/><target port='1'/></serial>
                <serial type='tcp'><source mode='connect' host='h,x' service='4558'><reconnect enabled='yes' timeout='5'/></source><target port='2'/></serial>
                <parallel type='pty'/>
                <parallel type='null'><target port='2'/></parallel>
            """)
        let args = try Fixtures.plan(xml).arguments
        let chardevs = args.indices.dropLast().filter { args[$0] == "-chardev" }.map { args[$0 + 1] }
        #expect(chardevs.contains("socket,id=charserial0,host=127.0.0.1,port=4555,telnet=on,server=on,wait=off"), "\(chardevs)")
        #expect(chardevs.contains("udp,id=charserial1,host=127.0.0.1,port=4557,localaddr=127.0.0.1,localport=4556"), "\(chardevs)")
        #expect(chardevs.contains("socket,id=charserial2,host=h,,x,port=4558,reconnect=5"), "\(chardevs)")
        #expect(chardevs.contains("pty,id=charparallel0") && chardevs.contains("null,id=charparallel1"))
        #expect(devices(try Fixtures.plan(xml)).contains(#"{"driver":"isa-parallel","chardev":"charparallel1","id":"parallel1"}"#))
        let bad = domainXML(devices: "    <serial type='tcp'><source mode='bind' host='127.0.0.1' service='http'/></serial>")
        #expect(throws: ShimError.self) { try Fixtures.plan(bad) }
        let four = domainXML(devices: String(repeating: "    <parallel type='null'/>\n", count: 4))
        #expect(throws: ShimError.self) { try Fixtures.plan(four) }
    }

    @Test func soundCardsWithTheirCodecs() throws {
        let xml = domainXML(devices: """
                <sound model='ich9'/>
                <sound model='ich6'><codec type='micro'/></sound>
                <sound model='ac97'/>
            """, machine: "q35")
        let lines = devices(try Fixtures.plan(xml))
        #expect(lines.contains(#"{"driver":"ich9-intel-hda","id":"sound0","bus":"pcie.0","addr":"0x1b"}"#), "\(lines)")
        #expect(lines.contains(#"{"driver":"hda-duplex","id":"sound0-codec0","bus":"sound0.0","cad":0,"audiodev":"audio1"}"#))
        #expect(lines.contains { $0.hasPrefix(#"{"driver":"intel-hda","id":"sound1","bus":"pci."#) })
        #expect(lines.contains(#"{"driver":"hda-micro","id":"sound1-codec0","bus":"sound1.0","cad":0,"audiodev":"audio1"}"#))
        #expect(lines.contains { $0.hasPrefix(#"{"driver":"AC97","id":"sound2","audiodev":"audio1","bus":"pci."#) })
        let badModel = domainXML(devices: "    <sound model='ich7'/>")
        #expect(throws: ShimError.self) { try Fixtures.plan(badModel) }
    }

    @Test func iotuneIsReadLikeLibvirtAndBecomesOneThrottleCommand() throws {
        let xml = domainXML(devices: """
                <disk type='file' device='disk'><source file='/a'/><target dev='vda'/>
                  <iotune><total_bytes_sec>1000</total_bytes_sec><read_iops_sec>10</read_iops_sec><read_iops_sec_max>20</read_iops_sec_max><group_name>g</group_name></iotune>
                </disk>
            """)
        let disk = try #require(try Fixtures.prepare(xml).devices.disks.first)
        #expect(disk.ioTune == ["bps": 1000, "iops_rd": 10, "iops_rd_max": 20] && disk.ioTuneGroup == "g")
        let command = BlockSetIOThrottle(device: "/machine/peripheral/virtio-disk0/virtio-backend", limits: disk.ioTune, group: "g")
        #expect(JSONValue.object(try #require(command.arguments)).description
            == #"{"id":"/machine/peripheral/virtio-disk0/virtio-backend","bps":1000,"bps_rd":0,"bps_wr":0,"iops":0,"iops_rd":10,"iops_wr":0,"iops_rd_max":20,"group":"g"}"#)
        for bad in [
            "<total_bytes_sec>1</total_bytes_sec><read_bytes_sec>1</read_bytes_sec>",
            "<read_iops_sec_max_length>5</read_iops_sec_max_length>",
            "<total_iops_sec>10</total_iops_sec><total_iops_sec_max>5</total_iops_sec_max>",
            "<total_bytes_sec>-1</total_bytes_sec>",
        ] {
            let refused = domainXML(devices: "    <disk type='file' device='disk'><source file='/a'/><target dev='vda'/><iotune>\(bad)</iotune></disk>")
            #expect(throws: ShimError.self, "\(bad)") { try Fixtures.prepare(refused) }
        }
    }

    @Test func diskIdentityAndGeometry() throws {
        let xml = domainXML(devices: """
                <disk type='file' device='disk'><source file='/a'/><target dev='sda' bus='scsi'/><wwn>0x5000c50015ea71ac</wwn><vendor>SEAGATE</vendor><product>ST3146356SS</product><blockio logical_block_size='512' physical_block_size='4096'/></disk>
            """)
        let lines = devices(try Fixtures.plan(xml))
        #expect(lines.contains { $0.hasSuffix(#""bootindex":1,"logical_block_size":512,"physical_block_size":4096,"wwn":5764824127192592812,"vendor":"SEAGATE","product":"ST3146356SS"}"#) }, "\(lines)")
        for bad in [
            "<target dev='vda' bus='virtio'/><wwn>5000c50015ea71ac</wwn>",
            "<target dev='hda' bus='ide'/><vendor>X</vendor>",
            "<target dev='sda' bus='scsi'/><wwn>5000c500</wwn>",
            "<target dev='sda' bus='scsi'/><product>a product name that is too long</product>",
            "<target dev='vda' bus='virtio'/><blockio logical_block_size='1000'/>",
        ] {
            let refused = domainXML(devices: "    <disk type='file' device='disk'><source file='/a'/>\(bad)</disk>")
            #expect(throws: ShimError.self, "\(bad)") { try Fixtures.prepare(refused) }
        }
    }

    @Test func numaCellsBecomeNodesWithTheirMemoryAndDistances() throws {
        let xml = domainXML(extra: """
              <cpu><topology sockets='2' dies='1' cores='2' threads='1'/><numa>
                <cell id='0' cpus='0,2' memory='64' unit='MiB'/>
                <cell id='1' cpus='1,3' memory='65536'><distances><sibling id='0' value='21'/></distances></cell>
              </numa></cpu>
            """).replacingOccurrences(of: "<vcpu>1</vcpu>", with: "<vcpu>4</vcpu>")
        let plan = try Fixtures.plan(xml)
        let args = plan.arguments
        let machine = try #require(args.firstIndex(of: "-machine").map { args[$0 + 1] })
        #expect(!machine.contains("memory-backend"))
        #expect(!args.contains { $0.contains(#""id":"pc.ram""#) })
        #expect(args.firstIndex(of: "-m").map { args[$0 + 1] } == "128", "the cells' sum")
        let numa = args.indices.dropLast().filter { args[$0] == "-numa" }.map { args[$0 + 1] }
        #expect(numa == [
            "node,nodeid=0,cpus=0,cpus=2,memdev=ram-node0", "node,nodeid=1,cpus=1,cpus=3,memdev=ram-node1",
            "dist,src=0,dst=0,val=10", "dist,src=0,dst=1,val=21", "dist,src=1,dst=0,val=21", "dist,src=1,dst=1,val=10",
        ])
        #expect(args.contains(#"{"qom-type":"memory-backend-ram","id":"ram-node1","size":67108864}"#))
        for bad in [
            "<cell id='1' cpus='0' memory='64' unit='MiB'/>",
            "<cell id='0' cpus='0-1' memory='64' unit='MiB'/><cell id='1' cpus='1-3' memory='64' unit='MiB'/>",
            "<cell id='0' cpus='0-7' memory='64' unit='MiB'/>",
            "<cell id='0' cpus='0-3' memory='64' unit='MiB' discard='yes'/>",
        ] {
            let refused = domainXML(extra: "  <cpu><numa>\(bad)</numa></cpu>").replacingOccurrences(of: "<vcpu>1</vcpu>", with: "<vcpu>4</vcpu>")
            #expect(throws: ShimError.self, "\(bad)") { try Fixtures.prepare(refused) }
        }
    }

    @Test func memoryBackingAsLibvirtWritesIt() throws {
        let xml = domainXML(extra: """
              <memoryBacking><nosharepages/><source type='memfd'/><access mode='shared'/><allocation mode='immediate'/></memoryBacking>
            """)
        let args = try Fixtures.plan(xml).arguments
        #expect(args.firstIndex(of: "-machine").map { args[$0 + 1] } == "pc,usb=off,dump-guest-core=off,mem-merge=off,memory-backend=pc.ram,acpi=off")
        #expect(args.contains(#"{"qom-type":"memory-backend-memfd","id":"pc.ram","share":true,"x-use-canonical-path-for-ramblock-id":false,"prealloc":true,"size":134217728}"#))
        for bad in ["<hugepages><page size='2048' nodeset='0'/></hugepages>", "<locked/>", "<source type='file'/>"] {
            let refused = domainXML(extra: "  <memoryBacking>\(bad)</memoryBacking>")
            #expect(throws: ShimError.self, "\(bad)") { try Fixtures.prepare(refused) }
        }
    }

    @Test func socketNICsAsLibvirtWritesThem() throws {
        let xml = domainXML(devices: """
                <interface type='mcast'><mac address='52:54:00:00:00:51'/><source address='230.0.0.1' port='5558'/></interface>
                <interface type='client'><mac address='52:54:00:00:00:52'/><source address='127.0.0.1' port='5559'/></interface>
                <interface type='udp'><mac address='52:54:00:00:00:53'/><source address='127.0.0.1' port='5560'><local address='127.0.0.1' port='5561'/></source></interface>
            """)
        let args = try Fixtures.plan(xml).arguments
        let netdevs = args.indices.dropLast().filter { args[$0] == "-netdev" }.map { args[$0 + 1] }
        #expect(netdevs == [
            #"{"type":"socket","mcast":"230.0.0.1:5558","id":"hostnet0"}"#,
            #"{"type":"socket","connect":"127.0.0.1:5559","id":"hostnet1"}"#,
            #"{"type":"socket","udp":"127.0.0.1:5560","localaddr":"127.0.0.1:5561","id":"hostnet2"}"#,
        ])
        for bad in [
            "<interface type='udp'><source address='127.0.0.1' port='5560'/></interface>",
            "<interface type='server'><source port='5560'/></interface>",
            "<interface type='mcast'><source address='230.0.0.1' port='1'><local address='1.2.3.4' port='2'/></source></interface>",
        ] {
            #expect(throws: ShimError.self, "\(bad)") { try Fixtures.prepare(domainXML(devices: "    " + bad)) }
        }
    }

    /// type='network' NICs are taps like bridge ones (the bridge comes from
    /// libvirt's port at start); `<tune><sndbuf>` goes on the tap netdev;
    /// a live definition's port and bridge are read back.
    @Test func networkNICsAndSendBuffers() throws {
        let xml = domainXML(devices: """
                <interface type='network'><mac address='52:54:00:00:00:61'/><source network='default'/><model type='virtio'/><tune><sndbuf>1600</sndbuf></tune><mtu size='9000'/></interface>
                <interface type='network'><mac address='52:54:00:00:00:62'/><source network='lab' portid='0333bca2-7499-42ac-816d-836b4b75a491' bridge='virbr1'/><model type='e1000'/></interface>
            """)
        let spec = try Fixtures.prepare(xml)
        #expect(spec.devices.interfaces.map(\.network) == ["default", "lab"])
        #expect(spec.devices.interfaces[1].networkPortID == "0333bca2-7499-42ac-816d-836b4b75a491")
        #expect(spec.devices.interfaces[1].bridge == "virbr1")
        let args = try Fixtures.plan(xml).arguments
        let netdevs = args.indices.dropLast().filter { args[$0] == "-netdev" }.map { args[$0 + 1] }
        #expect(netdevs == [#"{"type":"tap","fd":"4","sndbuf":1600,"id":"hostnet0"}"#, #"{"type":"tap","fd":"5","id":"hostnet1"}"#])
        #expect(devices(try Fixtures.plan(xml)).contains { $0.contains(#""host_mtu":9000"#) })
        for (bad, fragment) in [
            ("<interface type='network'/>", "needs <source network='NAME'/>"),
            ("<interface type='network'><source network='default' portgroup='web'/></interface>", "portgroup"),
            ("<interface type='network'><source network='default'/><target dev='tap0' managed='no'/></interface>", "managed='no'"),
            ("<interface type='user'><tune><sndbuf>1</sndbuf></tune></interface>", "<tune>"),
            ("<interface type='bridge'><source bridge='br0'/><tune><sndbuf>lots</sndbuf></tune></interface>", "number of bytes"),
        ] {
            expectRefusal(domainXML(devices: "    " + bad), saying: fragment)
        }
    }

    /// sb16 (ISA), ES1370 (PCI) and USB audio as libvirt 9.0 writes them; USB
    /// audio takes its port after input devices and before redirections.
    @Test func moreSoundModels() throws {
        let xml = domainXML(devices: """
                <sound model='usb'/>
                <input type='tablet' bus='usb'/>
                <sound model='sb16'/>
                <sound model='es1370'/>
            """)
        let sounds = devices(try Fixtures.plan(xml)).filter { $0.contains("sound") }
        #expect(sounds == [
            #"{"driver":"usb-audio","id":"sound0","audiodev":"audio1","bus":"usb.0","port":"2"}"#,
            #"{"driver":"sb16","id":"sound1","audiodev":"audio1"}"#,
            #"{"driver":"ES1370","id":"sound2","audiodev":"audio1","bus":"pci.0","addr":"0x2"}"#,
        ])
        for (bad, fragment) in [
            ("<sound model='pcspk'/>", "dropped -soundhw"),
            ("<sound model='sb16'><address type='pci' domain='0' bus='0' slot='5' function='0'/></sound>", "ISA"),
            ("<sound model='es1370'><codec type='micro'/></sound>", "no HDA codecs"),
            ("<sound model='usb'><address type='pci' domain='0' bus='0' slot='5' function='0'/></sound>", "USB address"),
        ] {
            expectRefusal(domainXML(devices: "    " + bad), saying: fragment)
        }
    }

    /// `<numatune>` on the RAM backends as libvirt 9.0 binds them: a cell's
    /// `<memnode>`, else `<memory>`; restrictive leaves the backend alone.
    @Test func numatuneBindsTheRAMBackends() throws {
        let cells = "  <cpu><numa><cell id='0' cpus='0' memory='64' unit='MiB'/><cell id='1' cpus='1' memory='64' unit='MiB'/><cell id='2' cpus='2' memory='64' unit='MiB'/></numa></cpu>"
        let xml = domainXML(extra: cells + "\n  <numatune><memory mode='interleave' nodeset='0-1'/><memnode cellid='0' mode='strict' nodeset='0'/><memnode cellid='2' mode='restrictive' nodeset='0'/></numatune>")
            .replacingOccurrences(of: "<vcpu>1</vcpu>", with: "<vcpu>3</vcpu>")
        let args = try Fixtures.plan(xml).arguments
        let backends = args.indices.dropLast().filter { args[$0] == "-object" && args[$0 + 1].contains("ram-node") }.map { args[$0 + 1] }
        #expect(backends == [
            #"{"qom-type":"memory-backend-ram","id":"ram-node0","size":67108864,"host-nodes":[0],"policy":"bind"}"#,
            #"{"qom-type":"memory-backend-ram","id":"ram-node1","size":67108864,"host-nodes":[0,1],"policy":"interleave"}"#,
            #"{"qom-type":"memory-backend-ram","id":"ram-node2","size":67108864}"#,
        ])
        let plain = try Fixtures.plan(domainXML(extra: "  <numatune><memory mode='preferred' nodeset='0'/></numatune>")).arguments
        #expect(plain.contains(#"{"qom-type":"memory-backend-ram","id":"pc.ram","size":134217728,"host-nodes":[0],"policy":"preferred"}"#))
        for (extra, fragment) in [
            ("  <numatune><memnode cellid='0' mode='strict' nodeset='0'/></numatune>", "names no guest NUMA cell"),
            ("  <numatune><memory mode='strict' placement='auto'/></numatune>", "numad"),
            ("  <numatune><memory mode='strict' nodeset='zero'/></numatune>", "nodeset='zero'"),
        ] {
            expectRefusal(domainXML(extra: extra), saying: fragment)
        }
    }

    /// type='direct' NICs are macvtap fds on the tap netdev, as libvirt
    /// passes them; the source device and a known mode are required.
    @Test func directNICsAreMacvtaps() throws {
        let xml = domainXML(devices: """
                <interface type='direct'><mac address='52:54:00:00:00:71'/><source dev='eth0' mode='bridge'/><model type='virtio'/></interface>
                <interface type='direct'><mac address='52:54:00:00:00:72'/><source dev='eth1'/><target dev='macvtap7'/></interface>
            """)
        let spec = try Fixtures.prepare(xml)
        #expect(spec.devices.interfaces.map(\.directDevice) == ["eth0", "eth1"])
        #expect(spec.devices.interfaces.map(\.directMode) == ["bridge", "vepa"])
        #expect(spec.devices.interfaces[1].targetDev == nil, "libvirt's generated name is output only")
        let plan = try Fixtures.plan(xml)
        #expect(plan.fds.contains { $0.resource == .macvtap(alias: "net0", vnetHeader: true) })
        #expect(plan.fds.contains { $0.resource == .macvtap(alias: "net1", vnetHeader: false) })
        let netdevs = plan.arguments.indices.dropLast().filter { plan.arguments[$0] == "-netdev" }.map { plan.arguments[$0 + 1] }
        #expect(netdevs == [#"{"type":"tap","fd":"4","id":"hostnet0"}"#, #"{"type":"tap","fd":"5","id":"hostnet1"}"#])
        for (bad, fragment) in [
            ("<interface type='direct'/>", "needs <source dev="),
            ("<interface type='direct'><source dev='eth0' mode='vepa2'/></interface>", "mode='vepa2'"),
            ("<interface type='direct'><source dev='eth0'/><target dev='mv0' managed='no'/></interface>", "managed='no'"),
        ] {
            expectRefusal(domainXML(devices: "    " + bad), saying: fragment)
        }
    }

    /// Controllers without index= get the lowest index their type does not
    /// use, in document order, as libvirt assigns them (virt-install's
    /// pcie-root and root ports may come without one).
    @Test func controllersWithoutIndexGetTheLowestFreeOne() throws {
        let xml = domainXML(devices: """
                <controller type='pci' model='pcie-root'/>
                <controller type='pci' model='pcie-root-port'/>
                <controller type='pci' index='2' model='pcie-root-port'/>
                <controller type='pci' model='pcie-root-port'/>
                <controller type='usb' model='qemu-xhci'/>
            """, machine: "q35")
        let spec = try Fixtures.prepare(xml)
        let pci = spec.devices.controllers.filter { $0.kind == .pci }.sorted { ($0.xmlIndex ?? 99) < ($1.xmlIndex ?? 99) }
        #expect(pci.prefix(4).map(\.index) == [0, 1, 2, 3])
        #expect(spec.devices.controllers.first { $0.kind == .usb }?.index == 0)
    }

    /// `<driver ioeventfd event_idx>` on virtio disks, in libvirt's key order.
    @Test func virtioDiskNotificationKnobs() throws {
        let xml = domainXML(devices: "    <disk type='file' device='disk'><driver name='qemu' type='raw' ioeventfd='off' event_idx='on' queues='2'/><source file='/var/lib/a.img'/><target dev='vda' bus='virtio'/></disk>")
        let device = try #require(devices(try Fixtures.plan(xml)).first { $0.contains("virtio-blk-pci") })
        #expect(device.hasPrefix(#"{"driver":"virtio-blk-pci","ioeventfd":false,"event_idx":true,"num-queues":2,"#), "\(device)")
        #expect(throws: ShimError.self) {
            try Fixtures.prepare(domainXML(devices: "    <disk type='file' device='disk'><driver name='qemu' event_idx='on'/><source file='/var/lib/a.img'/><target dev='sda' bus='sata'/></disk>"))
        }
    }

    @Test func intelIOMMUOnQ35() throws {
        let xml = domainXML(devices: "    <iommu model='intel'><driver caching_mode='on' iotlb='on' aw_bits='48'/></iommu>", machine: "q35")
        let args = try Fixtures.plan(xml).arguments
        let iommu = try #require(args.firstIndex(of: #"{"driver":"intel-iommu","id":"iommu0","caching-mode":true,"device-iotlb":true,"aw-bits":48}"#))
        #expect(args[iommu - 1] == "-device" && args[iommu - 2] == "strict=on", "right after -boot, before the controllers")
        for (devices, machine) in [
            ("<iommu model='intel'/>", "pc"), ("<iommu model='intel'><driver intremap='on'/></iommu>", "q35"),
            ("<iommu model='amd'/>", "q35"), ("<iommu model='intel'><driver aw_bits='40'/></iommu>", "q35"),
        ] {
            #expect(throws: ShimError.self, "\(devices)") { try Fixtures.prepare(domainXML(devices: "    " + devices, machine: machine)) }
        }
    }

    /// Interrupt remapping with the split I/O APIC libvirt requires for it,
    /// spelled as libvirt 9.0 spells it; eim needs KVM.
    @Test func intelIOMMUInterruptRemapping() throws {
        func guest(_ driver: String, ioapic: Bool = true, type: String = "qemu") -> String {
            domainXML(devices: "    <iommu model='intel'><driver \(driver)/></iommu>", type: type, machine: "q35")
                .replacingOccurrences(of: "<on_poweroff>", with: ioapic ? "<features><acpi/><ioapic driver='qemu'/></features><on_poweroff>" : "<on_poweroff>")
        }
        let args = try Fixtures.plan(guest("intremap='on' caching_mode='on'")).arguments
        #expect(args.contains(#"{"driver":"intel-iommu","id":"iommu0","intremap":"on","caching-mode":true}"#), "\(args)")
        #expect(args.contains { $0.contains("kernel_irqchip=split") })
        let kvm = try Fixtures.plan(guest("intremap='on' eim='on'", type: "kvm")).arguments
        #expect(kvm.contains(#"{"driver":"intel-iommu","id":"iommu0","intremap":"on","eim":"on"}"#), "\(kvm)")
        for (xml, fragment) in [
            (guest("intremap='on'", ioapic: false), "<ioapic driver='qemu'/>"),
            (guest("intremap='on' eim='on'"), "eim='on' with type='qemu'"),
            (guest("eim='on'"), "needs intremap='on'"),
        ] {
            expectRefusal(xml, saying: fragment)
        }
    }
}
