#!/usr/bin/env python3
"""Start-up latency: vmshim vs bare QEMU vs libvirt.

For each round the three variants run once each, one guest at a time, in an
order that rotates from round to round (so slow drift hits all of them):

  bare     exec QEMU -S with vmshim's own command line (QMP on a path socket
           instead of the pre-bound fd, files by path instead of fd sets),
           connect, qmp_capabilities, cont. "running" = the cont reply.
  vmshim   exec `vmshim run guest.xml`. "running" = the run directory's
           status.json says "state": "running" (written after the cont reply;
           polled).
  libvirt  exec `virsh create guest.xml`. "running" = virsh returns.

"marker" = VMSHIM-GUEST-READY appears in the guest's serial file (polled),
measured from the same exec. Times are in ms.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

VARIANTS = ("bare", "vmshim", "libvirt")
ADDED_TARGET_MS = 15.0
MARKER_RATIO_TARGET = 1.02


def add_arguments(parser):
    parser.add_argument("--runs", type=int, default=10, help="rounds (each runs every variant once; default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded rounds first (default 1)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to rest between guests (default 1)")
    parser.add_argument("--no-libvirt", action="store_true", help="leave libvirt out")


def run_vmshim(ctx, args, tag="s"):
    name, uuid, xml_path, serial = ctx.new_guest_files(tag)
    guest = bl.VmshimGuest(ctx, name, xml_path, serial).start()
    running = bl.StatusWatch(guest.status_path)
    marker = bl.MarkerWatch(serial)
    bl.poll_until([running, marker], args.timeout, args.poll_ms / 1000, alive=[guest.alive_check()])
    guest.status()  # learn QEMU's pid for the cleanup
    return guest, {"running_ms": bl.ms(running.t_ns - guest.t0), "marker_ms": bl.ms(marker.t_ns - guest.t0)}


def run_bare(ctx, args, template):
    name, uuid, _xml, serial = ctx.new_guest_files("b")
    guest = bl.BareGuest(ctx, template, name, uuid, serial)
    guest.start(args.poll_ms / 1000, args.timeout)
    marker = bl.MarkerWatch(serial)
    bl.poll_until([marker], args.timeout, args.poll_ms / 1000, alive=[guest.alive_check()])
    return guest, {"running_ms": bl.ms(guest.t_running - guest.t0), "marker_ms": bl.ms(marker.t_ns - guest.t0)}


def run_libvirt(ctx, args):
    name, uuid, xml_path, serial = ctx.new_guest_files("l")
    guest = bl.LibvirtGuest(ctx, name, xml_path, serial).start_create()
    running = bl.ExitWatch(guest.proc, f"virsh create ({name})", guest.out_path)
    marker = bl.MarkerWatch(serial)
    bl.poll_until([running, marker], args.timeout, args.poll_ms / 1000)
    return guest, {"running_ms": bl.ms(running.t_ns - guest.t0), "marker_ms": bl.ms(marker.t_ns - guest.t0)}


def stop(ctx, guest):
    guest.stop()
    ctx.janitor.forget(guest)


def run(args, ctx):
    variants = [v for v in VARIANTS if v != "libvirt" or not args.no_libvirt]
    if "libvirt" in variants:
        ok, why = bl.libvirt_reachable()
        if not ok:
            raise bl.BenchError(f"libvirt ({bl.LIBVIRT_URI}) is not reachable: {why}\n"
                                f"{bl.LIBVIRT_HINT}, or pass --no-libvirt")

    # Probe: one vmshim run tells us the exact QEMU command line (and warms
    # the page cache for the binary, kernel and initrd).
    bl.log("startup: probing vmshim's QEMU command line…")
    probe, _ = run_vmshim(ctx, args, tag="probe")
    template = bl.BareTemplate.from_vmshim_guest(probe, ctx.vmshim, ctx.run_root)
    stop(ctx, probe)
    time.sleep(args.settle)

    results = {v: [] for v in variants}
    rounds = args.warmup + args.runs
    for r in range(rounds):
        warm = r < args.warmup
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        line = []
        for variant in order:
            if variant == "bare":
                guest, sample = run_bare(ctx, args, template)
            elif variant == "vmshim":
                guest, sample = run_vmshim(ctx, args)
            else:
                guest, sample = run_libvirt(ctx, args)
            stop(ctx, guest)
            sample["round"] = r - args.warmup
            sample["position"] = order.index(variant)
            if not warm:
                results[variant].append(sample)
            line.append(f"{variant} {sample['running_ms']:.1f}/{sample['marker_ms']:.0f}")
            time.sleep(args.settle)
        label = "warm-up" if warm else f"round {r - args.warmup + 1}/{args.runs}"
        bl.log(f"  {label}: " + ", ".join(line) + "  (running/marker ms)")

    summary = {}
    for variant in variants:
        summary[variant] = {
            "running_ms": bl.summarize([s["running_ms"] for s in results[variant]]),
            "marker_ms": bl.summarize([s["marker_ms"] for s in results[variant]]),
        }
    med = {v: {m: summary[v][m]["median"] for m in ("running_ms", "marker_ms")} for v in variants}
    comparisons = {}
    for variant in variants:
        comparisons[variant] = {
            metric: {
                "vs_bare": bl.ratio(med[variant][metric], med["bare"][metric]),
                "vs_libvirt": bl.ratio(med[variant][metric], med["libvirt"][metric]) if "libvirt" in med else None,
            }
            for metric in ("running_ms", "marker_ms")
        }
    paired = [s["running_ms"] - b["running_ms"] for s, b in zip(results["vmshim"], results["bare"])]
    added = med["vmshim"]["running_ms"] - med["bare"]["running_ms"]
    marker_ratio = comparisons["vmshim"]["marker_ms"]["vs_bare"]
    targets = {
        "added_ms": {"value": added, "paired_median": bl.summarize(paired)["median"], "target": ADDED_TARGET_MS,
                     "pass": added <= ADDED_TARGET_MS},
        "marker_ratio": {"value": marker_ratio, "target": MARKER_RATIO_TARGET,
                         "pass": marker_ratio <= MARKER_RATIO_TARGET},
    }
    return {
        "config": {"runs": args.runs, "warmup": args.warmup, "settle_s": args.settle, "poll_ms": args.poll_ms,
                   "variants": variants, "template": ctx.template},
        "bare_qemu_argv": template.argv,
        "bare_qemu_env": template.env,
        "samples": results,
        "summary": summary,
        "comparisons": comparisons,
        "targets": targets,
    }


def fmt(value, unit="", digits=1):
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}"


def print_summary(result, info):
    s, c, t = result["summary"], result["comparisons"], result["targets"]
    variants = result["config"]["variants"]
    build = info["vmshim"]["build"]
    print()
    print(f"Start-up, {result['config']['runs']} runs, {build} build of vmshim "
          f"({info['cpus']} CPUs, {'KVM present' if info['kvm'] else 'no KVM'}; guest as in the template)")
    print(f"{'':22}{'median':>10}{'p90':>10}{'vs bare':>10}{'vs libvirt':>12}")
    for metric, title in (("running_ms", "exec → running"), ("marker_ms", "exec → guest marker")):
        print(title)
        for v in variants:
            print(f"  {v:20}{fmt(s[v][metric]['median'], ' ms'):>10}{fmt(s[v][metric]['p90'], ' ms'):>10}"
                  f"{fmt(c[v][metric]['vs_bare'], 'x', 3):>10}{fmt(c[v][metric]['vs_libvirt'], 'x', 3):>12}")
    a, m = t["added_ms"], t["marker_ratio"]
    print(f"vmshim added time (running, median − median): {a['value']:.1f} ms "
          f"(paired median {a['paired_median']:.1f} ms), target ≤ {a['target']:g} ms: "
          f"{'PASS' if a['pass'] else 'FAIL'}")
    print(f"marker ratio vmshim/bare: {m['value']:.3f}, target ≤ {m['target']:g}: {'PASS' if m['pass'] else 'FAIL'}")


def main(argv=None):
    return bl.standalone_main("startup", __doc__, add_arguments, run, print_summary, argv)


if __name__ == "__main__":
    sys.exit(main())
