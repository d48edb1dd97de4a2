"""Resident memory over long work: does any command grow as it goes on?

  python benchmarks/memory.py [--steps=5000] [--cases=200] [--out=benchmarks/results/memory.json]
      [--plot=benchmarks/results/memory.png]

Three commands, each run as a new process while this script samples its resident set size
(VmRSS, every 0.25 s; on a machine without accelerators the devices' memory is the process's
too): brats-jax-train on configs/tiny.py for --steps steps, validating and saving a checkpoint
every 250; brats-jax-predict of --cases synthetic cases (32x32x24) in one command; and
brats-jax-evaluate of the same cases. For each: the RSS at 10%, 50% and 100% of its run (the
first part is start-up: imports, compilation, caches filling), and the growth while the
work goes on: the highest RSS between 60% and 95% of the run above the RSS at 60% (the end
is left out: the last validation, the training curves' plot). A leak grows with the work;
a cache stops.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _rss_mib(pid: int) -> float | None:
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) / 1024
  except OSError:
    return None
  return None


def profile(command: list, env=None) -> dict:
  """Runs `command`, sampling its RSS; returns the samples and the RSS at 10/50/100%."""
  process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  samples, started = [], time.time()

  def sample():
    while process.poll() is None:
      rss = _rss_mib(process.pid)
      if rss:
        samples.append((time.time() - started, rss))
      time.sleep(0.25)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  _, errors = process.communicate()
  sampler.join()
  if process.returncode:
    sys.exit(f"{command[2]} failed (exit {process.returncode}): {errors.strip()[-500:]}")
  wall = samples[-1][0]

  def at(share):
    return next(rss for t, rss in samples if t >= share * wall)

  late = [rss for t, rss in samples if 0.6 * wall <= t <= 0.95 * wall]
  return {"command": " ".join(command[2:]), "wall_s": wall, "samples": samples,
          "rss_mib_at_10%": at(0.1), "rss_mib_at_50%": at(0.5), "rss_mib_at_end": samples[-1][1],
          "growth_mib": max(late) - at(0.6)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=5000)
  parser.add_argument("--cases", type=int, default=200)
  parser.add_argument("--out", default=os.path.join(HERE, "results", "memory.json"))
  parser.add_argument("--plot", help="draw the RSS curves here (PNG)")
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix="memory_")
  cli = [sys.executable, "-m"]
  subprocess.run(cli + ["brats_jax.cli.synth", f"--output={work}/raw", "--layout=brats2021",
                        "--num_cases=10", "--shape=32,32,24", "--seed=3"], check=True,
                 capture_output=True)
  subprocess.run(cli + ["brats_jax.cli.prepare", f"--input={work}/raw",
                        f"--output={work}/store"], check=True, capture_output=True)
  subprocess.run(cli + ["brats_jax.cli.synth", f"--output={work}/many", "--layout=brats2021",
                        f"--num_cases={args.cases}", "--shape=32,32,24", "--seed=4"],
                 check=True, capture_output=True)
  runs = {
      "train": profile(cli + [
          "brats_jax.cli.train", f"--config={ROOT}/configs/tiny.py", f"--workdir={work}/run",
          f"--config.data.store={work}/store", f"--config.train.num_steps={args.steps}",
          "--config.eval.every_steps=250", "--config.checkpoint.every_steps=250",
          "--config.log_every_steps=50"]),
      "predict": profile(cli + ["brats_jax.cli.predict", f"--workdir={work}/run",
                                f"--input={work}/many", f"--output={work}/pred"]),
      "evaluate": profile(cli + ["brats_jax.cli.evaluate", f"--predictions={work}/pred",
                                 f"--references={work}/many", f"--output={work}/scores.csv"]),
  }
  for name, run in runs.items():
    print(f"{name:<9} RSS at 10% {run['rss_mib_at_10%']:7.1f} MiB, at 50% "
          f"{run['rss_mib_at_50%']:7.1f}, at the end {run['rss_mib_at_end']:7.1f}; "
          f"{run['growth_mib']:+.1f} MiB from 60% to 95% of the run ({run['wall_s']:.0f} s)")
  result = {"date": time.strftime("%Y-%m-%d"), "label": "measured on this machine's CPU",
            "steps": args.steps, "cases": args.cases, "runs": runs}
  from brats_jax import files

  files.write_json(args.out, result)
  print(f"wrote {args.out}")
  if args.plot:
    from brats_jax.evaluation import plots

    fig, axes = plots.figure(1, 3, figsize=(13, 3.4))
    for ax, (name, run) in zip(axes, runs.items()):
      times, rss = zip(*run["samples"])
      ax.plot(times, rss)
      ax.set_title(f"{name}: {run['command'].split()[0]}", fontsize=9)
      ax.set_xlabel("seconds")
      ax.set_ylabel("resident MiB")
      ax.set_ylim(0, max(rss) * 1.1)
    fig.tight_layout()
    plots.save_png(fig, args.plot)
    print(f"drew {args.plot}")


if __name__ == "__main__":
  main()
