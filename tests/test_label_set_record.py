"""The model owns its label set: filled into the config once, built from the config without any
dataset catalog, recorded in every checkpoint, checked when a checkpoint is loaded, and kept
(flip pairs included) by a model built where the dataset's files are absent."""
from pathlib import Path

import pytest
import torch

import qanet_d2  # noqa: F401
from detectron2.modeling import build_model
from qanet_d2 import get_qanet_cfg
from qanet_d2.data.mixed_label_sets import fill_model_label_set
from qanet_d2.engine.checkpoint import QANetCheckpointer
from qanet_d2.weights_io import load_checkpoint_file, load_part_weights
from qanet_d2.structures.label_sets import get_label_set, label_set_from_classes, label_set_to_config

REPO = Path(__file__).resolve().parents[1]
INSTANT = REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"
SFP_CLASSES = ["background", "skin", "l_eye", "r_eye", "nose"]


def _cfg(*opts, datasets=()):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = tuple(datasets)
    cfg.merge_from_list([str(o) for o in opts])
    return cfg


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg)


def _sfp_cfg():
    """A 5-class set whose classes come from dataset files ("sfp"), written into the config."""
    cfg = _cfg("MODEL.QANET.NUM_CLASSES", 5)
    label_set_to_config(cfg, label_set_from_classes("sfp", SFP_CLASSES))
    return cfg


def test_config_filled_from_the_dataset_once_and_model_built_without_catalog():
    cfg = _cfg(datasets=["face_synth_train"])
    assert fill_model_label_set(cfg).name == "synthetic"
    q = cfg.MODEL.QANET.LABEL_SET
    syn = get_label_set("synthetic")
    assert (q.NAME, tuple(q.CLASSES), tuple(map(tuple, q.FLIP_PAIRS))) == ("synthetic", syn.classes, syn.flip_pairs)
    # the datasets are gone (a machine without them): the model is the same
    cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = ("no_such_dataset",)
    model = _model(cfg)
    assert model.label_set == syn
    assert model.parser.flip_permutation.tolist() == syn.flip_permutation().tolist()
    # NUM_CLASSES must agree with the label set
    cfg.MODEL.QANET.NUM_CLASSES = 6
    with pytest.raises(ValueError, match="NUM_CLASSES = 6, but the label set 'synthetic' has 17"):
        _model(cfg)


def test_parser_flip_back_mirrors_and_swaps_the_pairs():
    model = _model(_sfp_cfg())
    assert model.parser.flip_permutation.tolist() == [0, 1, 3, 2, 4]
    probs = torch.rand(2, 5, 8, 6)
    mirrored = probs.flip(-1)[:, [0, 1, 3, 2, 4]]  # what the parser sees on a mirrored crop
    torch.testing.assert_close(model.parser.flip_back(mirrored), probs)


def test_checkpoint_records_the_label_set_and_a_model_without_files_keeps_its_flip_pairs(tmp_path):
    trained = _model(_sfp_cfg(), seed=1)
    QANetCheckpointer(trained, save_dir=str(tmp_path)).save("model_final")
    path = tmp_path / "model_final.pth"
    record = load_checkpoint_file(str(path))["label_set"]
    assert record["name"] == "sfp" and record["classes"] == SFP_CLASSES and record["flip_pairs"] == [[2, 3]]

    # built where the SFP files are absent: the config names the set, its classes are unknown
    cfg = _cfg("MODEL.QANET.NUM_CLASSES", 5, "MODEL.QANET.LABEL_SET.NAME", "sfp")
    model = _model(cfg, seed=2)
    assert model.label_set is None and model.parser.flip_permutation.tolist() == [0, 1, 2, 3, 4]
    QANetCheckpointer(model).load(str(path))
    assert model.label_set.classes == tuple(SFP_CLASSES) and model.label_set.flip_pairs == ((2, 3),)
    assert model.parser.flip_permutation.tolist() == [0, 1, 3, 2, 4]

    # the parser part alone (ensembles, MODEL.QANET.PARSER_WEIGHTS) carries it too
    parser = _model(cfg, seed=3).parser
    load_part_weights(parser, "parser", str(path))
    assert parser.label_set.name == "sfp" and parser.flip_permutation.tolist() == [0, 1, 3, 2, 4]


def test_checkpoint_of_another_label_set_is_refused_naming_both(tmp_path):
    trained = _model(_sfp_cfg(), seed=1)
    QANetCheckpointer(trained, save_dir=str(tmp_path)).save("model_final")
    path = str(tmp_path / "model_final.pth")
    other = _cfg("MODEL.QANET.NUM_CLASSES", 5)
    label_set_to_config(other, label_set_from_classes("five", ["background", "skin", "hair", "eyes", "nose"]))
    for load in (lambda m: QANetCheckpointer(m).load(path), lambda m: load_part_weights(m.parser, "parser", path)):
        with pytest.raises(RuntimeError, match=r"label set 'sfp' .* differs from the config's label set 'five'"):
            load(_model(other, seed=2))
    # same classes, other flip pairs: refused too
    swapped = _sfp_cfg()
    swapped.MODEL.QANET.LABEL_SET.FLIP_PAIRS = []
    with pytest.raises(RuntimeError, match="differs from the config's label set 'sfp'"):
        QANetCheckpointer(_model(swapped, seed=2)).load(path)


def test_checkpoint_without_record_loads_with_the_configs_label_set(tmp_path):
    trained = _model(_sfp_cfg(), seed=1)
    state = {k: v for k, v in trained.state_dict().items() if k != "parser.flip_permutation"}
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": state}, legacy)  # written before the record existed
    model = _model(_sfp_cfg(), seed=2)
    QANetCheckpointer(model).load(str(legacy))
    assert model.label_set.name == "sfp" and model.parser.flip_permutation.tolist() == [0, 1, 3, 2, 4]
    torch.testing.assert_close(model.parser.parsing_branch.predictor.weight,
                               trained.parser.parsing_branch.predictor.weight, rtol=0, atol=0)
    parser = _model(_sfp_cfg(), seed=3).parser
    load_part_weights(parser, "parser", str(legacy))
    assert parser.flip_permutation.tolist() == [0, 1, 3, 2, 4]


@pytest.mark.parametrize("name", ["real_faces", "real_faces_realtime", "real_faces_fcos"])
def test_shipped_checkpoints_load_with_the_configs_label_set(name):
    from qanet_d2 import model_zoo
    from qanet_d2.engine.checkpoint import load_model_weights

    config, path = model_zoo.shipped_model(name)
    data = load_checkpoint_file(path)
    assert "label_set" not in data and "parser.flip_permutation" not in data["model"]  # written before the record
    cfg = get_qanet_cfg()
    cfg.merge_from_file(config)
    fill_model_label_set(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = path
    model = build_model(cfg)
    load_model_weights(cfg, model)
    assert model.label_set == get_label_set("fasseg") and model.parser.flip_permutation.tolist() == list(range(6))


def test_file_without_record_does_not_set_the_flip_permutation(tmp_path):
    """A state dict of a model built without a label set (identity permutation, no record):
    the loading model keeps its configured flip pairs."""
    unnamed = _model(_cfg("MODEL.QANET.NUM_CLASSES", 5), seed=1)
    assert unnamed.label_set is None
    path = tmp_path / "weights.pth"
    torch.save({"model": unnamed.state_dict()}, path)
    assert load_checkpoint_file(str(path))["model"]["parser.flip_permutation"].tolist() == [0, 1, 2, 3, 4]
    model = _model(_sfp_cfg(), seed=2)
    QANetCheckpointer(model).load(str(path))
    assert model.parser.flip_permutation.tolist() == [0, 1, 3, 2, 4]
    parser = _model(_sfp_cfg(), seed=3).parser
    load_part_weights(parser, "parser", str(path))
    assert parser.flip_permutation.tolist() == [0, 1, 3, 2, 4]
