"""Everything a training run does before its first step, in the order that keeps refusals
harmless: the config against the store and the devices, the relaunch rules against the
run's last inference contract, and the ahead-of-time memory check of the compiled step all
come before the workdir is touched. Only then are checkpoints restored and config.json
written. The result is a small Run object the loop (loop.py) drives.
"""

import concurrent.futures
import dataclasses
import sys

import jax
import ml_collections

from brats_jax import files, sharding
from brats_jax.data import preprocessing, splits
from brats_jax.data.store import PreparedStore
from brats_jax.errors import ConfigError
from brats_jax.train import compile as compile_lib
from brats_jax.train import device_input, epochs, metrics_log, optimizer
from brats_jax.train.host_input import PatchSampler
from brats_jax.workdir import contract, split_record, train_state
from brats_jax.workdir.checkpoints import Checkpoints, latest_saved_contract


def check_against_store(config: ml_collections.ConfigDict, *, channels: tuple,
                        num_folds: int, binary_labels: bool) -> None:
  """The config rules that need the store and the devices (config/checks.py has the rest)."""
  data = config.data
  missing = [m for m in data.modalities if m not in channels]
  if missing:
    raise ConfigError.of_field("data.modalities", tuple(data.modalities),
                               f"the store {data.store} has no {', '.join(missing)} (it "
                               f"holds {', '.join(channels)})")
  if binary_labels and config.loss.kind != "binary":
    raise ConfigError.of_field("loss.kind", config.loss.kind,
                               f"the store {data.store} holds binary masks (no TC or ET); "
                               "train it with loss.kind=binary")
  if data.val_fold >= num_folds:
    raise ConfigError.of_field("data.val_fold", data.val_fold,
                               f"the store {data.store} has folds 0-{num_folds - 1} (-1: no "
                               "validation)")


def check_against_mesh(config: ml_collections.ConfigDict, mesh, global_batch: int) -> None:
  """The config rules that need the resolved mesh."""
  space = mesh.shape[sharding.SPACE]
  if config.model.norm == "batch" and space > 1:
    # Batch statistics are averaged over the data axis; XLA cannot yet do that inside the
    # partially manual step when each sample is also split over the space axis.
    raise ConfigError.of_field(
        "model.norm", config.model.norm,
        f"batch norm needs whole samples on each device, but the global batch of "
        f"{global_batch} splits each over {space} of the {mesh.devices.size} devices "
        "(mesh.space): set data.batch_per_device (the batch then grows with the devices) or "
        "a global batch of at least the device count, or use model.norm=instance or group")


def _check_relaunch(config, workdir: str, train_ids, log) -> dict:
  """The accepted changes of a relaunch ({} for a new run); a relaunch that would change the
  trained run raises before anything is written."""
  latest = latest_saved_contract(workdir, log)
  if latest is None:
    return {}
  step, run_contract = latest
  return contract.check_relaunch(run_contract, config, contract.cases_checksum(train_ids),
                                 f"{workdir} (checkpoint {step})")


@dataclasses.dataclass(kw_only=True)
class Run:
  """A training run set up to take its next step."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  store: PreparedStore
  cases: splits.Split
  global_batch: int
  graphdef: object
  state: dict  # the train state (train_state.py), on the devices
  step_fn: object  # the compiled step
  examples_per_epoch: int  # training cases (3D) or their slices (2D): epochs.py
  placement: device_input.Placement
  sampler: PatchSampler
  data: dict | None  # the training cases on the devices, or None (streamed)
  checkpoints: Checkpoints
  start: int  # the first step this launch takes
  resumed: bool
  # Carried by every checkpoint's contract:
  history: list  # one entry per launch
  et_threshold: dict | None
  validations: list  # {"step", "mean_dice"} of every validation so far

  def batch_source(self):
    """What the host computes per step: patches (streamed) or descriptors (data on device)."""
    return self.sampler.batch if self.placement.mode == "host" else self.sampler.descriptors

  def save(self, done: int, val_metrics: dict | None) -> None:
    """Starts an asynchronous checkpoint of the state after step `done`."""
    train_ids = self.cases.train_ids
    data_position = {"next_step": int(done), "seed": int(self.config.seed),
                     "num_train_cases": len(train_ids),
                     "train_cases_crc32": contract.cases_checksum(train_ids),
                     "batch_per_device": int(self.config.data.batch_per_device),
                     "global_batch": int(self.global_batch)}
    training_data = {"store": self.store.path, "num_train_cases": len(train_ids),
                     "train_cases_crc32": contract.cases_checksum(train_ids),
                     "train_cases": list(train_ids),
                     "validation_store": self.cases.val_store.path,
                     "validation_cases": list(self.cases.val_ids)}
    self.checkpoints.save(done, self.state, data_position,
                          contract.make(self.config, self.store.preprocessing, training_data,
                                        self.et_threshold, self.history, self.validations),
                          val_metrics, force=True)


def start_run(config: ml_collections.ConfigDict, workdir: str, devices=None) -> Run:
  """Checks, compiles and restores the run in `workdir` on `devices` (default: all)."""
  is_main = sharding.is_main_process()
  log = (lambda m: print(m, file=sys.stderr, flush=True)) if is_main else (lambda m: None)
  mesh, global_batch = sharding.training_mesh(config, devices)
  check_against_mesh(config, mesh, global_batch)
  store = PreparedStore(config.data.store)
  check_against_store(config, channels=store.channels, num_folds=store.num_folds,
                      binary_labels=store.binary_labels)
  store = PreparedStore(config.data.store, config.data.modalities)
  preprocessing.check_supported(store.preprocessing, store.path)
  cases = splits.split(config, store)
  examples = epochs.examples_per_epoch(store, cases.train_ids, len(config.data.patch_size))
  config = epochs.resolve_num_steps(config, examples, global_batch)
  changes = _check_relaunch(config, workdir, cases.train_ids, log)

  tx = optimizer.make_optimizer(config.train)
  abstract = train_state.abstract_train_state(config, mesh, tx)
  graphdef, abstract_state = abstract
  # The step compiles from the state's shapes in a thread while the state itself is created:
  # XLA compiles without the GIL, and the two compilations overlap (seconds, on a CPU).
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile_step") as pool:
    compiling = pool.submit(compile_lib.compile_step, graphdef, tx, abstract_state, mesh,
                            config, store, cases.train_ids, global_batch, log)
    _, state = train_state.create_train_state(config, mesh, tx, abstract)
    if is_main:  # while the step compiles: the first step would wait for it (seconds)
      metrics_log.import_writer()
    step_fn, placement = compiling.result()
  sharding.wait_for_all_processes("brats_jax: train step compiled")

  # Nothing was written before this point; from here on the run is accepted.
  checkpoints = Checkpoints(workdir, config.checkpoint.keep, config.checkpoint.keep_best)
  start, history, et_threshold, validations = 0, [], None, []
  restored = checkpoints.restore_latest_readable(state, log)
  if restored is not None:
    _, state, _, run_contract = restored
    start = int(sharding.host_value(state["step"]))
    history, et_threshold = run_contract["history"], run_contract["et_threshold"]
    validations = run_contract.get("validations", [])
    if is_main:
      print(f"resumed from checkpoint at step {start}" + (
          "; changed: " + ", ".join(f"{f} {a!r} -> {b!r}" for f, (a, b) in changes.items())
          if changes else ""), flush=True)
  history = history + [{"start_step": start, "num_devices": int(mesh.devices.size),
                        "space": int(mesh.shape[sharding.SPACE]),
                        "num_processes": jax.process_count(),
                        "changes": {f: list(v) for f, v in changes.items()}}]
  if is_main:
    files.makedirs(workdir)
    contract.write_readable_config(config, workdir)
    split_record.write(workdir, split_record.record(cases, store, cases.description))
    split = (f" ({sharding.data_shards(mesh)} data-parallel x {mesh.shape[sharding.SPACE]} "
             "spatial)" if mesh.shape[sharding.SPACE] > 1 else "")
    print(f"{mesh.devices.size} devices ({jax.devices()[0].platform}){split}, "
          f"{jax.process_count()} processes; global batch {global_batch}; "
          f"{len(cases.train_ids)} training and {len(cases.val_ids)} validation cases "
          f"({cases.description}); {config.train.num_steps} steps = "
          f"{epochs.epoch(config.train.num_steps, examples, global_batch):.1f} epochs of "
          f"{examples} {'cases' if len(config.data.patch_size) == 3 else 'slices'}",
          flush=True)
    print(f"data: {placement.mode}: {placement.reason}", flush=True)

  sampler = PatchSampler(store, cases.train_ids, config.data.patch_size, global_batch,
                         sharding.process_batch_slice(mesh, global_batch),
                         config.data.foreground_fraction, config.seed,
                         sharded_over=sharding.data_shards(mesh)
                         if placement.mode == "sharded" else 0,
                         case_order=config.data.case_order,
                         foreground_centre=config.data.foreground_centre)
  data = device_input.load(store, cases.train_ids, placement, mesh)
  return Run(config=config, mesh=mesh, store=store, cases=cases, global_batch=global_batch,
             graphdef=graphdef, state=state, step_fn=step_fn, examples_per_epoch=examples,
             placement=placement, sampler=sampler, data=data, checkpoints=checkpoints,
             start=start, resumed=restored is not None, history=history,
             et_threshold=et_threshold, validations=validations)
