"""The inference contract saved with every checkpoint, and the rules for relaunching a run.

The contract is a small JSON item of each checkpoint: everything needed to use the model
without the training machinery or its logs:

    format_version   CONTRACT_VERSION
    config           the resolved config the run trained with (model, loss, data, ...)
    preprocessing    what the store applied (preprocessing.describe()); predict applies it
    training_data    the store, the training case ids (their number and checksum), the
                     validation store and case ids (WORKDIR/split.json adds their files)
    et_threshold     {"voxels": N, "chosen_at_step": S} chosen by validation, or None
    history          one entry per launch: first step, devices, processes, accepted changes

Relaunching a workdir compares the new config with the contract's: fields in RESUMABLE may
change (they are recorded in the history); any other change would silently alter a trained
model, its loss or its data, and is refused in one line before the workdir is touched.
"""

import zlib

import ml_collections

from brats_jax import files
from brats_jax.errors import ConfigError

CONTRACT_VERSION = 1
READABLE_CONFIG = "config.json"

# Fields a relaunch may change: how long and how often, not what is trained.
RESUMABLE = (
    "train.num_steps", "train.num_epochs", "train.warmup_steps",  # the schedule's length
    "train.on_nonfinite", "train.device_memory_gib", "train.early_stopping_patience",
    "model.remat",  # what the backward pass keeps or recomputes: memory, not the model
    "model.gpu_channel_multiple",  # how convolutions are laid out on GPUs, not the model
    "log_every_steps", "eval.", "checkpoint.",  # logging, validation and saving cadence
    "data.batch_per_device", "data.global_batch",  # sample i of step s stays f(seed, s, i)
    "mesh.space",  # how the devices split the work, not what is computed
    "data.prefetch", "data.store",  # where the data is read from (the cases are checked)
    "data.placement",  # host or device memory (sharded placement draws other batches)
    "data.val_store",  # validation only (the training cases are checked by checksum)
)

# Fields added since contract version 1, with the values that mean the behaviour before
# them: a run saved without them reads as if it had them.
ADDED_FIELDS = {"data.val_store": "", "data.val_fraction": 0.0, "data.split_seed": 0,
                "train.early_stopping_patience": 0, "data.global_batch": 0, "mesh.space": 0,
                "model.encoder_convs": (), "model.decoder_convs": (),
                "model.decoder_narrows": False, "augment.rotate_about": (0, 1, 2),
                "augment.p_mirror_axes": (), "train.num_epochs": 0,
                "model.gpu_channel_multiple": 0, "model.decoder_block": "same",
                "model.transunet_encoder": "unet", "data.case_order": "random",
                "data.foreground_centre": "per_class"}


def is_resumable(field: str) -> bool:
  return any(field == r or (r.endswith(".") and field.startswith(r)) for r in RESUMABLE)


def make(config, preprocessing: dict, training_data: dict, et_threshold: dict | None,
         history: list, validations: list) -> dict:
  """`history`: one entry per launch; `validations`: {"step", "mean_dice"} of every
  validation so far (what early stopping decides from, on every process alike)."""
  return {"format_version": CONTRACT_VERSION, "config": config.to_dict(),
          "preprocessing": preprocessing, "training_data": training_data,
          "et_threshold": et_threshold, "history": history, "validations": validations}


def check_version(contract: dict, where: str) -> dict:
  if contract.get("format_version") != CONTRACT_VERSION:
    raise ConfigError(f"{where}: inference contract version {contract.get('format_version')}; "
                      f"this version of brats_jax reads version {CONTRACT_VERSION}")
  return contract


def config_of(contract: dict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(_as_tuples(_with_added_fields(contract["config"])))


def _with_added_fields(config: dict) -> dict:
  config = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
  for field, value in ADDED_FIELDS.items():
    group, name = field.split(".")
    config.setdefault(group, {}).setdefault(name, value)
  return config


def _as_tuples(tree):
  """JSON turns tuples into lists; configs hold tuples (patch sizes, ranges)."""
  if isinstance(tree, dict):
    return {k: _as_tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_as_tuples(v) for v in tree)
  return tree


def flatten(tree, prefix: str = "") -> dict:
  """{"section.field": value} of a nested config (ConfigDict or dict); lists become tuples."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = _as_tuples(value)
  return flat


def cases_checksum(case_ids) -> int:
  """The checksum of a run's training case list (a relaunch must train on the same)."""
  return zlib.crc32("\n".join(case_ids).encode())


def write_readable_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """WORKDIR/config.json: the run's config for people to read (the contract is the record)."""
  files.write_text(files.join(workdir, READABLE_CONFIG), config.to_json_best_effort(indent=2))


def config_changes(run_config, new_config) -> dict:
  """{field: (run's value, new value)} of every field that differs."""
  old, new = flatten(run_config), flatten(new_config)
  return {f: (old.get(f), new.get(f)) for f in sorted(set(old) | set(new))
          if old.get(f) != new.get(f)}


def check_relaunch(contract: dict, new_config, train_cases_crc32: int, where: str) -> dict:
  """The accepted changes of a relaunch; a change that would alter the trained run is a
  ConfigError naming every such field (and nothing has been written)."""
  changes = config_changes(_with_added_fields(contract["config"]), new_config)
  refused = [f for f in changes if not is_resumable(f)]
  if refused:
    described = "; ".join(f"{f} {changes[f][0]!r} -> {changes[f][1]!r}" for f in refused)
    raise ConfigError(
        f"{where} was trained with other settings: {described}. These change the model, "
        "loss or data of a trained run; use a new --workdir (a relaunch may change only "
        "steps, schedule length, logging, validation and checkpoint cadence, batch per "
        "device, rematerialisation, the store path and the device count)")
  if train_cases_crc32 != contract["training_data"]["train_cases_crc32"]:
    raise ConfigError(
        f"{where} was trained on other cases than data.store={new_config.data.store} gives "
        f"for training ({contract['training_data']['num_train_cases']} cases, checksum "
        f"{contract['training_data']['train_cases_crc32']} vs {train_cases_crc32}); point "
        "data.store at the run's store or use a new --workdir")
  return changes
