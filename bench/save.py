#!/usr/bin/env python3
"""Managed save and restore: vmshim vs libvirt on the same guest.

For each guest size (--sizes, MiB) a vmshim guest and a libvirt guest are
booted from the same template with `vmshim.fill=N` on the kernel command
line, so N MiB (5/8 of the guest's memory) hold non-zero data that the save
has to write. Each guest is then saved and restored --runs times, with and
without --bypass-cache, alternating vmshim and libvirt:

  vmshim   save:    `vmshim save NAME [--bypass-cache]` until the shim has
                    exited (its QEMU is gone).
           restore: exec `vmshim run [--bypass-cache] guest.xml` until
                    status.json says running (the guest runs again).
  libvirt  save:    `virsh managedsave [--bypass-cache] NAME` returning.
           restore: `virsh start [--bypass-cache] NAME` returning.

Both write to the same file system (vmshim's save dir under the bench's
scratch directory, libvirt's /var/lib/libvirt/qemu/save). Without
--bypass-cache the restore reads an image the save has just written, so it
comes from the page cache for both. Image sizes are reported beside the
times. Times in ms.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

FILLED = b"VMSHIM-FILLED"
LIBVIRT_SAVE_DIR = "/var/lib/libvirt/qemu/save"


def add_arguments(parser):
    parser.add_argument("--sizes", default="256,1024", help="guest memory sizes in MiB (default 256,1024)")
    parser.add_argument("--save-runs", type=int, default=3,
                        help="save/restore cycles per size, mode and variant (default 3)")
    parser.add_argument("--no-libvirt-save", action="store_true", help="leave libvirt out of the save benchmark")


def fill_for(memory_mib):
    return memory_mib * 5 // 8


def vmshim_env(ctx):
    return dict(os.environ, VMSHIM_RUN_ROOT=ctx.run_root)


def boot(ctx, args, guest, serial):
    bl.poll_until([bl.MarkerWatch(serial, FILLED)], args.timeout + 300, 0.05,
                  alive=[guest.alive_check()] if guest.kind == "vmshim" else ())


def vmshim_cycle(ctx, args, guest, bypass):
    flags = ["--bypass-cache"] if bypass else []
    t0 = bl.now_ns()
    result = subprocess.run([ctx.vmshim, "save", guest.name, *flags], env=vmshim_env(ctx), capture_output=True,
                            text=True, timeout=600)
    if result.returncode != 0:
        raise bl.BenchError(f"vmshim save {guest.name} failed: {result.stderr.strip()}")
    try:
        guest.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        raise bl.BenchError(f"vmshim {guest.name} did not exit after its save") from None
    t_saved = bl.now_ns()
    if guest.proc.returncode != 0:
        raise bl.BenchError(f"vmshim {guest.name} exited {guest.proc.returncode} after its save")
    image = os.path.join(ctx.run_root, "save", f"{guest.name}.save")
    size = os.path.getsize(image)
    # Restore: the same `vmshim run` a user would type.
    out = open(guest.out_path, "ab")
    t1 = bl.now_ns()
    guest.proc = subprocess.Popen([ctx.vmshim, "run", *flags, guest.xml_path], env=vmshim_env(ctx),
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    out.close()
    running = bl.StatusWatch(guest.status_path)
    bl.poll_until([running], args.timeout + 300, args.poll_ms / 1000, alive=[guest.alive_check()])
    if running.last.get("reason") != "restored":
        raise bl.BenchError(f"vmshim {guest.name} came back '{running.last.get('reason')}', not restored")
    guest.status()
    if os.path.exists(image):
        raise bl.BenchError(f"{image} was not deleted after the restore")
    return {"save_ms": bl.ms(t_saved - t0), "restore_ms": bl.ms(running.t_ns - t1), "image_mib": size / bl.MIB}


def libvirt_cycle(ctx, args, guest, bypass):
    flags = ["--bypass-cache"] if bypass else []
    t0 = bl.now_ns()
    guest.virsh("managedsave", *flags, guest.name, timeout=600)
    t_saved = bl.now_ns()
    image = os.path.join(LIBVIRT_SAVE_DIR, f"{guest.name}.save")
    size = os.path.getsize(image)
    t1 = bl.now_ns()
    guest.virsh("start", *flags, guest.name, timeout=600)
    t_running = bl.now_ns()
    state = guest.virsh("domstate", guest.name).stdout.strip()
    if state != "running":
        raise bl.BenchError(f"libvirt guest {guest.name} is {state} after virsh start")
    if os.path.exists(image):
        raise bl.BenchError(f"libvirt kept {image} after the restore")
    return {"save_ms": bl.ms(t_saved - t0), "restore_ms": bl.ms(t_running - t1), "image_mib": size / bl.MIB}


def booted_once(serial):
    """The guest kept its memory across the cycles: it booted and filled once."""
    with open(serial, "rb") as f:
        data = f.read()
    return data.count(FILLED) == 1 and data.count(bl.MARKER) == 1


def run(args, ctx):
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    variants = ["vmshim"] + ([] if args.no_libvirt_save else ["libvirt"])
    if "libvirt" in variants:
        ok, why = bl.libvirt_reachable()
        if not ok:
            raise bl.BenchError(f"libvirt ({bl.LIBVIRT_URI}) is not reachable: {why}\n"
                                f"{bl.LIBVIRT_HINT}, or pass --no-libvirt-save")
    results = {}
    for size in sizes:
        fill = fill_for(size)
        bl.log(f"save: {size} MiB guests, {fill} MiB filled; booting…")
        guests = {}
        for variant in variants:
            name, _uuid, xml_path, serial = ctx.new_guest_files(f"save{variant[0]}", memory_mib=size,
                                                                cmdline_extra=f"vmshim.fill={fill}", serial_append=True)
            if variant == "vmshim":
                guest = bl.VmshimGuest(ctx, name, xml_path, serial).start()
            else:
                guest = bl.LibvirtGuest(ctx, name, xml_path, serial).define_and_start()
            guests[variant] = (guest, serial)
        for variant, (guest, serial) in guests.items():
            boot(ctx, args, guest, serial)
        results[size] = {}
        for bypass in (False, True):
            mode = "bypass" if bypass else "cached"
            samples = {v: [] for v in variants}
            for r in range(args.save_runs):
                line = []
                order = variants if r % 2 == 0 else variants[::-1]
                for variant in order:
                    guest, _serial = guests[variant]
                    cycle = vmshim_cycle if variant == "vmshim" else libvirt_cycle
                    sample = cycle(ctx, args, guest, bypass)
                    samples[variant].append(sample)
                    line.append(f"{variant} {sample['save_ms']:.0f}/{sample['restore_ms']:.0f}")
                    time.sleep(1)
                bl.log(f"  {size} MiB {mode} {r + 1}/{args.save_runs}: " + ", ".join(line) + "  (save/restore ms)")
            results[size][mode] = {
                v: {
                    "samples": samples[v],
                    "save_ms": bl.summarize([s["save_ms"] for s in samples[v]]),
                    "restore_ms": bl.summarize([s["restore_ms"] for s in samples[v]]),
                    "image_mib": bl.summarize([s["image_mib"] for s in samples[v]]),
                }
                for v in variants
            }
        for variant, (guest, serial) in guests.items():
            if not booted_once(serial):
                raise bl.BenchError(f"{variant} guest {guest.name} booted again during the cycles (see {serial})")
            guest.stop()
            if variant == "libvirt":
                guest.virsh("managedsave-remove", guest.name, check=False)
            ctx.janitor.forget(guest)
    return {"config": {"sizes": sizes, "runs": args.save_runs, "variants": variants, "template": ctx.template},
            "results": {str(k): v for k, v in results.items()}}


def print_summary(result, info):
    variants = result["config"]["variants"]
    print()
    print(f"Managed save / restore, {result['config']['runs']} cycles each, {info['vmshim']['build']} build of vmshim "
          f"({info['cpus']} CPUs; TCG guests; 5/8 of guest memory filled)")
    print(f"{'':28}{'save':>10}{'restore':>10}{'image':>10}{'save vs libvirt':>17}{'restore vs libvirt':>20}")
    for size, modes in result["results"].items():
        for mode, by_variant in modes.items():
            print(f"{size} MiB, {'--bypass-cache' if mode == 'bypass' else 'page cache'}")
            for v in variants:
                row = by_variant[v]
                save, restore = row["save_ms"]["median"], row["restore_ms"]["median"]
                vs_save = vs_restore = None
                if "libvirt" in by_variant and v != "libvirt":
                    vs_save = bl.ratio(save, by_variant["libvirt"]["save_ms"]["median"])
                    vs_restore = bl.ratio(restore, by_variant["libvirt"]["restore_ms"]["median"])
                print(f"  {v:26}{save:>8.0f}ms{restore:>8.0f}ms{row['image_mib']['median']:>6.0f}MiB"
                      f"{(f'{vs_save:.3f}x' if vs_save else '-'):>17}{(f'{vs_restore:.3f}x' if vs_restore else '-'):>20}")


def main(argv=None):
    return bl.standalone_main("save", __doc__, add_arguments, run, print_summary, argv)


if __name__ == "__main__":
    sys.exit(main())
