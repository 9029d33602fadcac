import NIOCore
import NIOHTTP1
import NIOPosix
import ShimKit

/// The registrar's figures in the Prometheus text format (version 0.0.4),
/// with conventional names: base units (bytes, seconds), `_total` for
/// counters, one series per domain labelled by name and uuid.
enum PrometheusText {
    static func render(_ domains: [Domain], host: HostAccounting.Capacity) -> String {
        var out = ""
        out.reserveCapacity(512 + domains.count * 1600)
        let sorted = domains.sorted { $0.identity.name < $1.identity.name }
        func family(_ name: String, _ type: String, _ help: String, _ samples: (inout String) -> Void) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            samples(&out)
        }
        func labels(_ domain: Domain, _ extra: [(String, String)] = []) -> String {
            let pairs = [("name", domain.identity.name), ("uuid", domain.identity.uuid)] + extra
            return "{" + pairs.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        func perDomain(_ name: String, _ type: String, _ help: String, _ value: (Domain) -> Double?) {
            family(name, type, help) { out in
                for domain in sorted {
                    guard let number = value(domain) else { continue }
                    out += "\(name)\(labels(domain)) \(format(number))\n"
                }
            }
        }
        func perDisk(_ name: String, _ type: String, _ help: String, _ value: (Vmshim_Registrar_V1_DiskAccounting) -> UInt64) {
            family(name, type, help) { out in
                for domain in sorted {
                    for disk in domain.resources.disks {
                        out += "\(name)\(labels(domain, [("target", disk.target)])) \(value(disk))\n"
                    }
                }
            }
        }
        let kib = { (value: UInt64) in Double(value) * 1024 }
        let micros = { (value: UInt64) in Double(value) / 1_000_000 }

        family("vmshim_domain_info", "gauge", "Domains the registrar knows (always 1), with their state.") { out in
            for domain in sorted {
                let state = RegistrationWire.name(domain.status.state)
                out += "vmshim_domain_info\(labels(domain, [("state", state), ("reason", domain.status.reason), ("connected", domain.connected ? "true" : "false")])) 1\n"
            }
        }
        perDomain("vmshim_domain_qemu_pid", "gauge", "QEMU's pid (in the shim's pid namespace).") { Double($0.status.qemuPid) }
        perDomain("vmshim_domain_vcpus", "gauge", "Configured vCPUs (current).") { Double($0.identity.vcpus) }
        perDomain("vmshim_domain_vcpus_max", "gauge", "Configured vCPUs (maximum).") { Double($0.identity.vcpusMax) }
        perDomain("vmshim_domain_memory_bytes", "gauge", "Configured memory (current).") { kib($0.identity.memoryKib) }
        perDomain("vmshim_domain_memory_max_bytes", "gauge", "Configured memory (maximum).") { kib($0.identity.maxMemoryKib) }
        perDomain("vmshim_domain_balloon_bytes", "gauge", "The balloon's actual size (query-balloon).") {
            $0.resources.balloonActualKib == 0 ? nil : kib($0.resources.balloonActualKib)
        }
        perDomain("vmshim_domain_qemu_resident_bytes", "gauge", "QEMU's resident set size.") { kib($0.resources.qemuRssKib) }
        perDomain("vmshim_domain_qemu_proportional_bytes", "gauge", "QEMU's proportional set size.") {
            kib($0.resources.qemuPssKib)
        }
        perDomain("vmshim_domain_cpu_seconds_total", "counter", "QEMU's user and system CPU time.") {
            micros($0.resources.qemuCpuTimeMicros)
        }
        perDomain("vmshim_domain_shim_resident_bytes", "gauge", "The shim's resident set size (its overhead).") {
            kib($0.resources.shimRssKib)
        }
        perDomain("vmshim_domain_shim_proportional_bytes", "gauge", "The shim's proportional set size.") {
            kib($0.resources.shimPssKib)
        }
        perDomain("vmshim_domain_shim_cpu_seconds_total", "counter", "The shim's user and system CPU time.") {
            micros($0.resources.shimCpuTimeMicros)
        }
        perDisk("vmshim_domain_disk_capacity_bytes", "gauge", "Guest-visible disk size.") { $0.capacityBytes }
        perDisk("vmshim_domain_disk_allocation_bytes", "gauge", "Bytes the disk's image occupies on the host.") {
            $0.allocationBytes
        }
        perDisk("vmshim_domain_disk_read_bytes_total", "counter", "Bytes read by the guest.") { $0.readBytes }
        perDisk("vmshim_domain_disk_written_bytes_total", "counter", "Bytes written by the guest.") { $0.writeBytes }
        perDisk("vmshim_domain_disk_read_requests_total", "counter", "Read requests.") { $0.readOps }
        perDisk("vmshim_domain_disk_write_requests_total", "counter", "Write requests.") { $0.writeOps }
        perDisk("vmshim_domain_disk_flush_requests_total", "counter", "Flush requests.") { $0.flushOps }

        let totals = HostAccounting.compute(domains, host: host)
        func hostGauge(_ name: String, _ help: String, _ value: Double) {
            family(name, "gauge", help) { $0 += "\(name) \(format(value))\n" }
        }
        hostGauge("vmshim_host_cpus", "Online CPUs.", Double(totals.cpus))
        hostGauge("vmshim_host_memory_bytes", "MemTotal.", kib(totals.memoryTotalKib))
        hostGauge("vmshim_host_committed_vcpus", "vCPUs of domains whose QEMU runs.", Double(totals.committedVcpus))
        hostGauge("vmshim_host_committed_memory_bytes", "Memory of domains whose QEMU runs.", kib(totals.committedMemoryKib))
        hostGauge("vmshim_host_vcpu_overcommit_ratio", "Committed vCPUs per online CPU.", totals.vcpuOvercommit)
        hostGauge("vmshim_host_memory_overcommit_ratio", "Committed memory per MemTotal.", totals.memoryOvercommit)
        family("vmshim_registrar_domains", "gauge", "Domains by state.") { out in
            var counts: [String: Int] = [:]
            for domain in domains { counts[RegistrationWire.name(domain.status.state), default: 0] += 1 }
            for state in ["starting", "running", "paused", "shutting-down", "shutoff", "crashed", "unreachable"] {
                out += "vmshim_registrar_domains{state=\"\(state)\"} \(counts[state] ?? 0)\n"
            }
        }
        return out
    }

    static func escape(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }

    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}

/// A minimal HTTP/1.1 server for `GET /metrics` (`--metrics-listen`).
final class MetricsServer: Sendable {
    let host: String
    let port: Int
    let render: @Sendable () async -> String

    init(listen: String, render: @escaping @Sendable () async -> String) throws {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw ShimError(.invalidArgument, "--metrics-listen '\(listen)': give ADDRESS:PORT, e.g. 127.0.0.1:9465")
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host.isEmpty ? "0.0.0.0" : host
        self.port = port
        self.render = render
    }

    /// Binds the listening socket (before the registrar serves anything, so
    /// a bad address stops it at once).
    func bind(group: MultiThreadedEventLoopGroup) async throws -> any Channel {
        let render = self.render
        do {
            return try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.pipeline.configureHTTPServerPipeline().flatMap {
                        channel.pipeline.addHandler(MetricsHandler(render: render))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            throw ShimError(
                .system, "--metrics-listen \(host):\(port): cannot listen there (\(error)); choose a free address and port",
                cause: error)
        }
    }

    /// Serves on a bound channel until the task is cancelled.
    static func serve(_ channel: any Channel) async throws {
        try await withTaskCancellationHandler {
            try await channel.closeFuture.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}

final class MetricsHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let render: @Sendable () async -> String
    private var path = ""
    private var method = HTTPMethod.GET

    init(render: @escaping @Sendable () async -> String) { self.render = render }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = head.uri
            method = head.method
        case .body:
            break
        case .end:
            let loop = context.eventLoop
            let bound = NIOLoopBound(context, eventLoop: loop)
            let wanted = path.split(separator: "?").first.map(String.init) ?? path
            guard method == .GET || method == .HEAD, wanted == "/metrics" || wanted == "/" else {
                respond(bound.value, status: .notFound, body: "only GET /metrics is served here\n", type: "text/plain")
                return
            }
            let render = self.render
            loop.makeFutureWithTask { await render() }.whenSuccess { text in
                self.respond(bound.value, status: .ok, body: text, type: "text/plain; version=0.0.4; charset=utf-8")
            }
        }
    }

    private func respond(_ context: ChannelHandlerContext, status: HTTPResponseStatus, body: String, type: String) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if method != .HEAD {
            var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
