"""Post-processing: what each rule does to a case's labels, and how rules are chosen on
validation predictions (kept only where they raise the mean Dice and raise no HD95)."""

import numpy as np
import pytest

from brats_jax.errors import DataError
from brats_jax.evaluation import choose_rules
from brats_jax.inference import postprocessing
from brats_jax.labels import ED, ET, NCR

Rules = postprocessing.Rules


def _case():
  labels = np.zeros((12, 12, 12), np.uint8)
  labels[1:5, 1:5, 1:5] = ED  # 64 voxels of edema around 8 of enhancing tumour: one component
  labels[2:4, 2:4, 2:4] = ET
  labels[8:10, 8:10, 8:10] = NCR  # 8 voxels of necrosis, apart
  labels[7, 7, 7] = ET  # touches the necrosis only at a corner (26-connected): 9 together
  labels[0, 11, 0] = ED  # a lone voxel
  return labels


def test_small_whole_tumour_components_become_background():
  labels = _case()
  cleaned = postprocessing.remove_components(labels, "WT", 10)
  assert (cleaned[:6, :6, :6] == labels[:6, :6, :6]).all()  # 64 voxels: kept as they were
  assert cleaned[6:, 6:, 6:].max() == 0 and cleaned[0, 11, 0] == 0
  kept = postprocessing.remove_components(labels, "WT", 9)  # the 9-voxel component stays
  assert (kept[6:, 6:, 6:] == labels[6:, 6:, 6:]).all() and kept[0, 11, 0] == 0
  largest = postprocessing.remove_components(labels, "WT", 0)  # only the largest
  assert (largest == cleaned).all()


def test_core_and_enhancing_components_stay_tumour():
  """A removed core component becomes edema (the whole tumour is unchanged), a removed
  enhancing component necrosis (the core is unchanged)."""
  labels = _case()
  core = postprocessing.remove_components(labels, "TC", 0)  # cores: 8 + 9 voxels, apart
  assert (core[2:4, 2:4, 2:4] == ED).all() and (core > 0).sum() == (labels > 0).sum()
  assert (core[8:10, 8:10, 8:10] == NCR).all() and core[7, 7, 7] == ET
  enhancing = postprocessing.remove_components(labels, "ET", 2)  # the lone ET voxel goes
  assert enhancing[7, 7, 7] == NCR and (enhancing[2:4, 2:4, 2:4] == ET).all()
  assert np.isin(enhancing, (NCR, ET)).sum() == np.isin(labels, (NCR, ET)).sum()


def test_rules_apply_in_order_and_survive_their_file(tmp_path):
  rules = Rules(et_threshold=20, components=(("WT", 10), ("ET", 0)))
  labels = _case()
  out = postprocessing.apply(labels, rules)
  assert not (out == ET).any()  # 9 ET voxels in all, under 20: necrosis
  assert out[0, 11, 0] == 0 and out[6:, 6:, 6:].max() == 0
  postprocessing.save_decision(str(tmp_path), rules, {"num_cases": 1})
  assert postprocessing.load_decision(str(tmp_path)) == rules
  assert postprocessing.load_decision(str(tmp_path / "elsewhere")) is None
  assert "components under 10 voxels" in rules.describe()


def test_components_far_from_the_largest_go_and_a_piece_beside_it_stays():
  labels = np.zeros((30, 30, 30), np.uint8)
  labels[2:10, 2:10, 2:10] = ED  # the lesion: 512 voxels
  labels[12:14, 2:4, 2:4] = ED  # a piece beside it: 2 empty voxels between, 3 voxels away
  labels[24:27, 24:27, 24:27] = ED  # an island 14 voxels beyond the lesion's corner
  for gap in (3, 4, 8):
    cleaned = postprocessing.remove_far_components(labels, "WT", gap)
    assert (cleaned[:20] == labels[:20]).all() and cleaned[20:].max() == 0, gap
  assert postprocessing.remove_far_components(labels, "WT", 2)[10:].max() == 0
  assert (postprocessing.remove_far_components(labels, "WT", 30) == labels).all()
  one = np.where(labels == ED, ED, 0).astype(np.uint8)
  one[10:] = 0
  assert (postprocessing.remove_far_components(one, "WT", 0) == one).all()  # one component


def test_a_gap_rule_survives_its_file_and_older_files_still_load(tmp_path):
  rules = Rules(components=(("WT", "max_gap_voxels", 8), ("TC", 0)))
  assert rules.components[1] == ("TC", "min_voxels", 0)  # the (region, N) shorthand
  postprocessing.save_decision(str(tmp_path), rules, {"num_cases": 1})
  assert postprocessing.load_decision(str(tmp_path)) == rules
  assert rules.describe() == ("WT: components over 8 voxels from the largest removed; "
                              "TC: only the largest component")
  older = {"et_threshold": 50, "components": [{"region": "WT", "min_voxels": 25}]}
  assert Rules.from_json(older) == Rules(50, (("WT", 25),))
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / postprocessing.DECISION_FILE).write_text(
      '{"rules": {"et_threshold": 0, "components": [{"region": "WT"}]}}')
  with pytest.raises(DataError, match="not a post-processing decision"):
    postprocessing.load_decision(str(tmp_path / "bad"))


def _sphere(shape, centre, radius):
  grid = np.indices(shape)
  return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def test_a_rule_is_kept_only_where_it_raises_dice_and_no_hd95():
  """Far islands of false-positive tumour: keeping the largest whole-tumour component
  raises Dice and lowers HD95, so it is chosen; where the reference has two lesions, the
  same rule would lose one, so nothing is chosen."""
  shape, spacing = (40, 40, 40), (1.0, 1.0, 1.0)
  reference = np.where(_sphere(shape, (12, 12, 12), 6), ED, 0).astype(np.uint8)
  reference[_sphere(shape, (12, 12, 12), 3)] = ET
  predicted = reference.copy()
  predicted[31:37, 31:37, 31:37] = ED  # an island far from the lesion
  rules, report = choose_rules.choose([predicted] * 3, [reference] * 3, [spacing] * 3,
                                      "region", progress=False)
  assert rules.components and rules.components[0][0] == "WT", rules
  assert report["after"]["mean_dice"] > report["before"]["mean_dice"]
  assert report["after"]["WT"]["hd95"] < report["before"]["WT"]["hd95"]
  assert report["tried"] and all("scores" in t for t in report["tried"])

  two_lesions = reference.copy()
  two_lesions[31:37, 31:37, 31:37] = ED  # the island is a real second lesion
  rules, report = choose_rules.choose([two_lesions], [two_lesions], [spacing], "region",
                                      progress=False)
  assert rules == Rules() and report["after"] == report["before"]


def test_a_rule_that_raises_dice_but_also_hd95_is_not_kept():
  """Four cases with a false-positive island just beside the lesion and one with a small
  true lesion far away: removing small components raises the mean Dice (the islands go) but
  loses the far lesion, whose HD95 jumps by ~20 mm: refused. No smaller threshold removes
  the islands (60 voxels) without the lesion (40)."""
  shape, spacing = (40, 40, 40), (1.0, 1.0, 1.0)
  lesion = np.where(_sphere(shape, (12, 12, 12), 6), ED, 0).astype(np.uint8)
  with_island = lesion.copy()
  with_island[20:23, 10:14, 10:15] = ED  # 60 voxels, 2 voxels beyond the lesion
  far = lesion.copy()
  far[30:34, 30:32, 30:35] = ED  # 40 voxels, ~30 mm away: a real second lesion
  decoded, references = [with_island] * 4 + [far], [lesion] * 4 + [far]
  for rules in (Rules(components=(("WT", 0),)), Rules(components=(("WT", 100),))):
    trial = [postprocessing.apply(d, rules) for d in decoded]
    scores = choose_rules._Scores(references, [spacing] * 5, ("WT", "TC", "ET"))
    after, before = scores.mean(trial), scores.mean(decoded)
    assert after["mean_dice"] > before["mean_dice"]  # the rule would raise Dice,
    assert after["WT"]["hd95"] > before["WT"]["hd95"] + 2  # and HD95 too
  rules, report = choose_rules.choose(decoded, references, [spacing] * 5, "region",
                                      progress=False)
  assert rules == Rules(), rules
  refused = [t for t in report["tried"] if t["rule"] == "WT: only the largest component"]
  assert refused and refused[0]["scores"]["mean_dice"] > report["before"]["mean_dice"]


@pytest.mark.parametrize("kind,regions", [("binary", ("WT",)), ("softmax", ("WT", "TC", "ET"))])
def test_binary_tasks_choose_whole_tumour_rules_only(kind, regions):
  reference = np.zeros((20, 20, 20), np.uint8)
  reference[5:10, 5:10, 5:10] = 6 if kind == "binary" else ED
  rules, report = choose_rules.choose([reference], [reference], [(1.0, 1.0, 1.0)], kind,
                                      progress=False)
  assert [r for r in ("WT", "TC", "ET") if r in report["before"]] == list(regions)
  assert rules == Rules()


def test_islands_far_away_go_where_the_largest_component_would_cut_a_real_piece():
  """Two cases with a false-positive island far from the lesion, one whose tumour has a
  second piece beside the lesion. "Only the largest" and "under N voxels" (the island is
  the larger) remove the piece with the islands; a gap rule removes the islands alone, and
  is chosen."""
  shape, spacing = (40, 40, 40), (1.0, 1.0, 1.0)
  lesion = np.where(_sphere(shape, (12, 12, 12), 7), ED, 0).astype(np.uint8)
  with_island = lesion.copy()
  with_island[31:36, 31:36, 31:36] = ED  # 125 voxels, ~20 voxels beyond the lesion
  two_pieces = lesion.copy()
  two_pieces[22:26, 10:14, 10:14] = ED  # 64 voxels, 3 voxels beyond the lesion: real
  decoded, references = [with_island, with_island, two_pieces], [lesion, lesion, two_pieces]
  rules, report = choose_rules.choose(decoded, references, [spacing] * 3, "region",
                                      progress=False)
  assert [c[:2] for c in rules.components] == [("WT", "max_gap_voxels")], rules
  assert 3 <= rules.components[0][2] < 17, rules
  after = [postprocessing.apply(d, rules) for d in decoded]
  assert (after[0] == lesion).all() and (after[2] == two_pieces).all()
  assert report["after"]["WT"]["dice"] == pytest.approx(1.0)
  largest = [t for t in report["tried"] if t["rule"] == "WT: only the largest component"][0]
  assert largest["scores"]["mean_dice"] < report["after"]["mean_dice"]
