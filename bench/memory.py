#!/usr/bin/env python3
"""Memory per shim: start --count vmshim guests, wait until every guest has
printed its marker and then --idle seconds more, and read each shim's
/proc/PID/smaps_rollup. The figure is Private_Clean + Private_Dirty (memory
no other process shares: the shim's own cost once the binary's pages are
shared by the other shims), with Pss and Rss alongside.

For scale, one bare QEMU (vmshim's command line, same guest) runs next to
them. With --with-libvirt, the same number of guests is then defined and
started under libvirt and libvirtd's private memory is divided by the number
of guests (both its total and its growth over the idle baseline).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

SHIM_TARGET_MIB = 4.0
LIBVIRT_DAEMONS = ("libvirtd", "virtqemud", "virtlogd")


def add_arguments(parser):
    parser.add_argument("--count", type=int, default=20, help="guests to run at once (default 20)")
    parser.add_argument("--guest-mem", type=int, default=96,
                        help="guest memory in MiB (default 96; the test kernel does not boot in 64)")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="seconds to wait after the last marker before measuring (default 5)")
    parser.add_argument("--with-libvirt", action="store_true",
                        help="also measure libvirtd with the same number of defined, running guests")


def memory_of(pid):
    fields = bl.smaps_rollup(pid)
    return {
        "private_mib": bl.private_mib(fields),
        "private_dirty_mib": fields.get("Private_Dirty", 0) / 1024,
        "pss_mib": fields.get("Pss", 0) / 1024,
        "rss_mib": fields.get("Rss", 0) / 1024,
    }


def summarize_memory(samples):
    keys = ("private_mib", "private_dirty_mib", "pss_mib", "rss_mib")
    return {key: bl.summarize([s[key] for s in samples]) for key in keys}


def daemon_memory():
    result = {}
    for comm in LIBVIRT_DAEMONS:
        pids = bl.pids_named(comm)
        if pids:
            samples = [memory_of(pid) for pid in pids]
            result[comm] = {"pids": pids, "private_mib": sum(s["private_mib"] for s in samples),
                            "pss_mib": sum(s["pss_mib"] for s in samples)}
    return result


def wait_markers(watches, args, alive=()):
    timeout = max(args.timeout, 15.0 * len(watches))
    bl.poll_until(watches, timeout, max(args.poll_ms, 10.0) / 1000, alive=alive)


def measure_vmshim(args, ctx):
    # The bare QEMU's command line comes from a probe guest that is gone
    # again before the measured shims start: asking a measured shim for it
    # (vmshim qmp) would fault in code the others never run.
    name, uuid, xml_path, serial = ctx.new_guest_files("mprobe", args.guest_mem)
    probe = bl.VmshimGuest(ctx, name, xml_path, serial).start()
    bl.poll_until([bl.StatusWatch(probe.status_path)], args.timeout, args.poll_ms / 1000,
                  alive=[probe.alive_check()])
    template = bl.BareTemplate.from_vmshim_guest(probe, ctx.vmshim, ctx.run_root)
    probe.stop()
    ctx.janitor.forget(probe)

    guests = []
    start_ms = []
    bl.log(f"memory: starting {args.count} vmshim guests of {args.guest_mem} MiB…")
    for _ in range(args.count):
        name, uuid, xml_path, serial = ctx.new_guest_files("m", args.guest_mem)
        guest = bl.VmshimGuest(ctx, name, xml_path, serial).start()
        running = bl.StatusWatch(guest.status_path)
        bl.poll_until([running], args.timeout, args.poll_ms / 1000, alive=[guest.alive_check()])
        guest.status()
        start_ms.append(bl.ms(running.t_ns - guest.t0))
        guests.append(guest)

    name, uuid, _xml, serial = ctx.new_guest_files("mb", args.guest_mem)
    bare = bl.BareGuest(ctx, template, name, uuid, serial)
    bare.start(args.poll_ms / 1000, args.timeout)

    markers = [bl.MarkerWatch(g.serial) for g in guests] + [bl.MarkerWatch(bare.serial)]
    bl.log(f"memory: waiting for {len(markers)} guests to boot…")
    wait_markers(markers, args, alive=[g.alive_check() for g in guests] + [bare.alive_check()])
    bl.log(f"memory: all booted; idling {args.idle:g} s")
    time.sleep(args.idle)

    shims = [dict(memory_of(g.proc.pid), pid=g.proc.pid, name=g.name) for g in guests]
    qemus = [dict(memory_of(g.qemu_pid), pid=g.qemu_pid, name=g.name) for g in guests]
    bare_mem = dict(memory_of(bare.qemu_pid), pid=bare.qemu_pid, name=bare.name)

    bl.log("memory: stopping the vmshim guests…")
    for guest in guests + [bare]:
        guest.stop()
        ctx.janitor.forget(guest)
    return {
        "start_running_ms": bl.summarize(start_ms),
        "shims": shims,
        "shim_summary": summarize_memory(shims),
        "qemus": qemus,
        "qemu_summary": summarize_memory(qemus),
        "bare_qemu": bare_mem,
    }


def measure_libvirt(args, ctx):
    ok, why = bl.libvirt_reachable()
    if not ok:
        raise bl.BenchError(f"libvirt ({bl.LIBVIRT_URI}) is not reachable: {why}\n{bl.LIBVIRT_HINT}")
    baseline = daemon_memory()
    if not any(d in baseline for d in ("libvirtd", "virtqemud")):
        raise bl.BenchError("neither libvirtd nor virtqemud is running")
    bl.log(f"memory: defining and starting {args.count} libvirt guests…")
    guests = []
    for _ in range(args.count):
        name, uuid, xml_path, serial = ctx.new_guest_files("ml", args.guest_mem)
        guests.append(bl.LibvirtGuest(ctx, name, xml_path, serial).define_and_start())
    wait_markers([bl.MarkerWatch(g.serial) for g in guests], args)
    bl.log(f"memory: all booted; idling {args.idle:g} s")
    time.sleep(args.idle)
    loaded = daemon_memory()
    bl.log("memory: stopping the libvirt guests…")
    for guest in guests:
        guest.stop()
        ctx.janitor.forget(guest)
    main = "libvirtd" if "libvirtd" in loaded else "virtqemud"
    total = loaded[main]["private_mib"]
    base = baseline.get(main, {}).get("private_mib", 0.0)
    return {
        "daemon": main,
        "baseline": baseline,
        "loaded": loaded,
        "private_mib_total": total,
        "private_mib_per_domain": total / args.count,
        "growth_mib_per_domain": (total - base) / args.count,
    }


def run(args, ctx):
    result = {
        "config": {"count": args.count, "guest_mem_mib": args.guest_mem, "idle_s": args.idle,
                   "template": ctx.template},
        "vmshim": measure_vmshim(args, ctx),
    }
    if args.with_libvirt:
        result["libvirt"] = measure_libvirt(args, ctx)
    s = result["vmshim"]["shim_summary"]["private_mib"]
    result["targets"] = {"shim_private_mib": {"value": s["mean"], "max": s["max"], "target": SHIM_TARGET_MIB,
                                              "pass": s["max"] <= SHIM_TARGET_MIB}}
    return result


def print_summary(result, info):
    cfg, vm = result["config"], result["vmshim"]
    print()
    print(f"Memory, {cfg['count']} guests of {cfg['guest_mem_mib']} MiB, {info['vmshim']['build']} build of vmshim, "
          f"measured {cfg['idle_s']:g} s after the last guest booted (MiB)")
    print(f"{'':34}{'mean':>8}{'median':>8}{'max':>8}")

    def row(title, summary):
        print(f"  {title:32}{summary['mean']:8.2f}{summary['median']:8.2f}{summary['max']:8.2f}")

    row("vmshim private (clean+dirty)", vm["shim_summary"]["private_mib"])
    row("vmshim private dirty", vm["shim_summary"]["private_dirty_mib"])
    row("vmshim Pss", vm["shim_summary"]["pss_mib"])
    row("vmshim Rss", vm["shim_summary"]["rss_mib"])
    row("QEMU under vmshim private", vm["qemu_summary"]["private_mib"])
    print(f"  {'bare QEMU private (one)':32}{vm['bare_qemu']['private_mib']:8.2f}")
    if "libvirt" in result:
        lv = result["libvirt"]
        base = lv["baseline"].get(lv["daemon"], {}).get("private_mib", 0.0)
        print(f"  {lv['daemon'] + ' private':32}{lv['private_mib_total']:8.2f}   "
              f"(idle before: {base:.2f}) with {cfg['count']} domains")
        print(f"  {lv['daemon'] + ' private / domain':32}{lv['private_mib_per_domain']:8.2f}   "
              f"growth / domain: {lv['growth_mib_per_domain']:.2f}")
        if "virtlogd" in lv["loaded"]:
            print(f"  {'virtlogd private':32}{lv['loaded']['virtlogd']['private_mib']:8.2f}")
    t = result["targets"]["shim_private_mib"]
    print(f"vmshim private per shim: mean {t['value']:.2f} MiB, max {t['max']:.2f} MiB, target (every shim) ≤ {t['target']:g} MiB: "
          f"{'PASS' if t['pass'] else 'FAIL'}")


def main(argv=None):
    return bl.standalone_main("memory", __doc__, add_arguments, run, print_summary, argv)


if __name__ == "__main__":
    sys.exit(main())
