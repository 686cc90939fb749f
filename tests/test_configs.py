"""Every shipped config loads, passes validation, has a consistent schedule, and its model
builds and runs one forward at a tiny size.

Configs that describe the same network (they differ only in data, schedule, test
augmentation or training mode) share one model build, so the ~65 M-parameter HRNet-W48 parser
is built once per label set rather than once per file.
"""
from pathlib import Path

import pytest
import torch

import qanet_d2  # noqa: F401
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from qanet_d2 import get_qanet_cfg
from qanet_d2.engine.validation import validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml"))


def load(path):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(REPO / path))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def architecture_key(cfg) -> str:
    """The network a config builds: its MODEL options without those that change no module
    (weights to load, training and test modes, the training crops' augmentation)."""
    model = cfg.MODEL.clone()
    model.WEIGHTS = ""
    model.QANET.TRAIN_MODE = "joint"
    model.QANET.TEST_BOXES = "detector"
    # Building a model loads no weights (ImageNet weights are loaded by the checkpointer when
    # training starts, tests/test_pretrained.py), so the GPU configs build offline as shipped.
    model.QANET.DETECTOR_WEIGHTS = model.QANET.PARSER_WEIGHTS = model.FCOS.BACKBONE_WEIGHTS = ""
    model.QANET.HRNET.PRETRAINED, model.QANET.HRNET.PRETRAINED_PATH = False, ""
    model.QANET.BACKBONE.RESNET_WEIGHTS = ""
    model.QANET.pop("AUG")  # training augmentation
    return model.dump() + f"\nFORMAT: {cfg.INPUT.FORMAT}"


def _groups():
    groups = {}
    for path in CONFIGS:
        groups.setdefault(architecture_key(load(path)), []).append(path)
    return {paths[0]: paths for paths in groups.values()}


GROUPS = _groups()


def test_configs_are_found():
    expected = {
        "configs/sfp/qanet_hrnet_w48_fcos_r50_512x384.yaml",
        "configs/quick_schedules/qanet_fcos_synth_instant_test.yaml",
        "configs/quick_schedules/qanet_parser_synth_instant_test.yaml",
        "configs/quickstart/qanet_fcos_synth.yaml",
        "configs/realtime/qanet_fcos_synth_realtime.yaml",
    }
    assert expected <= set(CONFIGS)
    for family in ("sfp", "lapa", "celebamask_hq"):
        names = {Path(p).name for p in CONFIGS if p.startswith(f"configs/{family}/")}
        for variant in ("hrnet_w18", "hrnet_w32", "resnet50", "resnet101", "_trainval", "_tta"):
            assert any(variant in n for n in names), (family, variant)


@pytest.mark.parametrize("path", CONFIGS)
def test_config_is_valid_and_schedule_consistent(path):
    cfg = load(path)
    validate_config(cfg, for_training=True, check_datasets=False)
    solver = cfg.SOLVER
    if solver.EPOCHS == 0:
        assert list(solver.STEPS) == sorted(solver.STEPS) and all(0 < s < solver.MAX_ITER for s in solver.STEPS)
    family = path.startswith(("configs/sfp/", "configs/lapa/", "configs/celebamask_hq/"))
    if family:
        # every GPU config states its schedule in epochs, and rescales the lr linearly (the authors' rule)
        assert solver.EPOCHS > 0 and solver.LR_SCALING == "linear" and solver.REFERENCE_WORLD_SIZE > 0
    if family and "detector_only" not in path:
        # the report's recipe: Adam 2e-3, batch 256, 140 epochs, x0.1 at epochs 90 and 120, no warm-up
        assert solver.OPTIMIZER == "ADAM" and solver.BASE_LR == 0.002 and solver.IMS_PER_BATCH == 256
        assert solver.WARMUP_EPOCHS == 0 and solver.GAMMA == 0.1 and solver.WEIGHT_DECAY == 0.0
        assert solver.EPOCHS == 140 and list(solver.STEPS_EPOCHS) == [90, 120]
        assert tuple(cfg.MODEL.QANET.INPUT_SIZE) == (512, 384)
        assert cfg.MODEL.QANET.AUG.ENABLED and cfg.MODEL.QANET.AUG.FLIP_PROB == 0.5
        assert cfg.TEST.AUG.ENABLED and cfg.TEST.AUG.FLIP
        assert cfg.INPUT.RANDOM_FLIP == "none"  # frames are not flipped where part labels are used
        assert cfg.MODEL.QANET.INFERENCE.PIXEL_SCORE_REGION == "pasted"  # the official code's region
    if "detector_only" in path:
        # detectron2's FCOS 1x: SGD 0.01 for 16 frames, warm-up from x0.001, steps at 2/3 and 8/9, flip
        assert (solver.OPTIMIZER, solver.BASE_LR, solver.IMS_PER_BATCH, solver.MOMENTUM) == ("SGD", 0.01, 16, 0.9)
        assert solver.WARMUP_FACTOR == 0.001 and solver.WARMUP_EPOCHS > 0 and solver.EPOCHS == 12
        assert [round(e / solver.EPOCHS, 3) for e in solver.STEPS_EPOCHS] == [0.667, 0.889]
        assert cfg.INPUT.RANDOM_FLIP == "horizontal"
    if "_tta" in path:
        assert tuple(cfg.TEST.AUG.BOX_SCALES) == (0.9, 1.0, 1.1, 1.2, 1.3)


def _sfp_route(path):
    name = Path(path).name
    if name.startswith("fcos_r50_detector_only"):
        return "detector"
    if name.endswith("_joint.yaml"):
        return "joint"
    return "parser"


SFP_CONFIGS = [p for p in CONFIGS if p.startswith("configs/sfp/") and not Path(p).name.startswith("Base-")]


@pytest.mark.parametrize("path", SFP_CONFIGS)
def test_sfp_configs_report_their_route(path):
    """Every SFP entry is stage-wise: stage 1 (the detector alone) and stage 2 (the entry's own
    config: the parser on face crops, with the stage-1 detector of the same training data
    frozen); joint training is one separate config that says it is not the report's route."""
    from qanet_d2.engine.route import training_route

    cfg = load(path)
    route = training_route(cfg)
    kind = _sfp_route(path)
    if kind == "detector":
        assert route == "stage-wise, stage 1: the detector alone on whole frames"
        assert cfg.DATALOADER.SAMPLE_UNIT == "image" and not cfg.MODEL.QANET.DETECTOR_WEIGHTS
    elif kind == "joint":
        assert route.startswith("joint:") and "not the report's route" in route
        assert cfg.DATALOADER.SAMPLE_UNIT == "image" and cfg.MODEL.QANET.TRAIN_MODE == "joint"
    else:
        trainval = "_trainval" in path or "_tta" in path
        stage1 = load("configs/sfp/fcos_r50_detector_only" + ("_trainval" if trainval else "") + ".yaml")
        assert list(stage1.DATASETS.TRAIN) == list(cfg.DATASETS.TRAIN)
        detector = stage1.OUTPUT_DIR + "/model_final.pth"
        assert route == f"stage-wise, stage 2: the parser alone on face crops (epochs of faces), the detector of {detector} frozen"
        assert cfg.MODEL.QANET.DETECTOR_WEIGHTS == detector


def test_every_sfp_entry_has_its_own_output_dir():
    trained = [p for p in SFP_CONFIGS if "_tta" not in p]  # _tta evaluates _trainval's model
    dirs = [load(p).OUTPUT_DIR for p in trained]
    assert len(set(dirs)) == len(dirs) and all(d.startswith("output/sfp/") for d in dirs)


def test_the_official_code_details_are_the_defaults():
    cfg = get_qanet_cfg()
    assert cfg.SOLVER.OPTIMIZER == "ADAM" and cfg.SOLVER.WEIGHT_DECAY == 0.0
    assert cfg.MODEL.QANET.PARSING.LOVASZ_PER_CROP is True
    assert cfg.MODEL.QANET.CROP_OUTSIDE_LABEL == "background"
    assert cfg.MODEL.QANET.INFERENCE.PAINT_ORDER == "box" and cfg.MODEL.QANET.INFERENCE.BOX_SCORE_THRESH == 0.3
    assert cfg.MODEL.QANET.INFERENCE.PIXEL_SCORE_REGION == "image"  # the CPU configs' (box pixels)
    assert cfg.DATALOADER.SAMPLE_UNIT == "image"


@pytest.mark.parametrize("path", CONFIGS)
def test_adam_without_weight_decay_sgd_with(path):
    solver = load(path).SOLVER
    assert solver.WEIGHT_DECAY == (0.0001 if solver.OPTIMIZER == "SGD" else 0.0)


def _tiny_inputs(height=128, width=160):
    torch.manual_seed(0)
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.tensor([[40.0, 30.0, 100.0, 110.0]]))
    inst.gt_classes = torch.zeros(1, dtype=torch.long)
    image = torch.randint(0, 255, (3, height, width), dtype=torch.uint8)
    return [{"image": image, "instances": inst, "height": height * 2, "width": width * 2}]


@pytest.mark.parametrize("path", sorted(GROUPS), ids=lambda p: p[len("configs/"):-len(".yaml")])
def test_model_builds_and_runs(path):
    """Builds the model of ``path`` (and so of every config in its group) and runs inference on
    one tiny image, once with the detector's boxes (if any) and once with given boxes."""
    cfg = load(path)
    cfg.MODEL.QANET.INPUT_SIZE = (128, 96)  # tiny crops; the network is unchanged
    if cfg.MODEL.QANET.DETECTOR.NAME:
        cfg.MODEL.QANET.TEST_BOXES = "detector"  # run the detector too (given boxes below)
    model = build_model(cfg)
    model.eval()
    q = cfg.MODEL.QANET
    num_params = sum(p.numel() for p in model.parser.backbone.parameters())
    if q.BACKBONE.NAME == "build_timm_hrnet_backbone" and q.HRNET.NAME == "hrnet_w48":
        assert 64e6 < num_params < 67e6  # about 65 M
    assert (model.detector is None) == (not cfg.MODEL.QANET.DETECTOR.NAME)
    inputs = _tiny_inputs()
    given = [Instances((128, 160), pred_boxes=inputs[0]["instances"].gt_boxes)]
    with torch.no_grad():
        if model.detector is not None:
            out = model.inference(inputs)[0]
            assert out["labels"].shape == (256, 320)
        out = model.inference(inputs, face_boxes=given, class_scores=True)[0]
    assert out["sem_seg"].shape == (q.NUM_CLASSES, 256, 320) and out["labels"].shape == (256, 320)
    assert len(out["instances"]) == len(out["face_labels"]) == 1
    with torch.no_grad():
        raw = model.inference(inputs, face_boxes=given, do_postprocess=False)[0]["instances"]
    assert raw.parsing_probs.shape == (1, 1, q.NUM_CLASSES, 128, 96)
    for other in GROUPS[path]:
        assert architecture_key(load(other)) == architecture_key(load(path))


INSTANT = "configs/quick_schedules/qanet_fcos_synth_instant_test.yaml"


@pytest.mark.parametrize(
    "key, bad",
    [
        ("MODEL.QANET.TRAIN_MODE", "both"),
        ("MODEL.QANET.TEST_BOXES", "oracle"),
        ("SOLVER.OPTIMIZER", "lamb"),
        ("TEST.FACE_PARSING.ABSENT_CLASS", "zero"),
        ("VIDEO.ALIGN", "flow"),
        ("VIDEO.TRACK_MOTION", "kalman"),
    ],
)
def test_validation_rejects_a_value_outside_the_choices(key, bad):
    from qanet_d2.engine.validation import ConfigError

    cfg = load(INSTANT)
    validate_config(cfg, for_training=True, check_datasets=False)
    cfg.merge_from_list([key, bad])
    with pytest.raises(ConfigError, match=f"{key} = '{bad}': expected one of"):
        validate_config(cfg, for_training=True, check_datasets=False)


def test_validation_choices_are_the_owners_objects(monkeypatch):
    """The validator checks against the very tuples the model, trainer and evaluator use, and
    against the parser's input-size divisibility, so the two cannot drift apart."""
    from qanet_d2.engine import trainer, validation
    from qanet_d2.engine.validation import ConfigError
    from qanet_d2.evaluation import face_parsing_evaluator
    from qanet_d2.modeling import meta_arch
    from qanet_d2 import video
    from qanet_d2.modeling.qanet import parser

    choices = validation._CHOICES
    assert choices["MODEL.QANET.TRAIN_MODE"] is meta_arch.TRAIN_MODES
    assert choices["MODEL.QANET.TEST_BOXES"] is meta_arch.TEST_BOXES
    assert choices["SOLVER.OPTIMIZER"] is trainer.OPTIMIZERS
    assert choices["TEST.FACE_PARSING.ABSENT_CLASS"] is face_parsing_evaluator.ABSENT_CLASS_MODES
    assert choices["VIDEO.ALIGN"] is video.ALIGNS
    assert choices["VIDEO.TRACK_MOTION"] is video.TRACK_MOTIONS

    cfg = load(INSTANT)
    cfg.MODEL.QANET.INPUT_SIZE = (384, 288)  # 3:4, multiples of 32 but not of 64
    validate_config(cfg, for_training=True, check_datasets=False)
    cfg.MODEL.QANET.INPUT_SIZE = (200, 150)
    with pytest.raises(ConfigError, match=r"INPUT_SIZE = \(200, 150\).*multiples of 32"):
        validate_config(cfg, for_training=True, check_datasets=False)
    monkeypatch.setattr(parser, "INPUT_SIZE_DIVISIBILITY", 64)
    cfg.MODEL.QANET.INPUT_SIZE = (384, 288)
    with pytest.raises(ConfigError, match=r"INPUT_SIZE = \(384, 288\).*multiples of 64"):
        validate_config(cfg, for_training=True, check_datasets=False)


def test_real_face_stages_train_the_shipped_models_network():
    """The stage-wise real-face recipe: stage 1 trains the detector, stage 2 the parser with
    stage 1's detector; both build the network of the config the shipped model is used with, and
    stage 1 repeats the joint recipe's frames, crop draws and schedule (its detector is the joint
    recipe's, bit for bit: tests/test_train_net.py)."""
    main = load("configs/real_faces/qanet_fcos_fasseg_synth_composites.yaml")
    det = load("configs/real_faces/fcos_fasseg_synth_composites_detector.yaml")
    parser = load("configs/real_faces/qanet_fasseg_synth_composites_parser.yaml")
    assert parser.MODEL.FCOS.SCORE_THRESH_TEST == det.MODEL.FCOS.SCORE_THRESH_TEST == main.MODEL.FCOS.SCORE_THRESH_TEST
    for key in ("INPUT", "SOLVER", "DATALOADER", "DATASETS", "SEED"):
        assert det[key] == main[key], key
    assert det.MODEL.QANET.AUG == main.MODEL.QANET.AUG  # the same crop draws
    assert parser.SOLVER.AMP.ENABLED and not main.SOLVER.AMP.ENABLED
    for cfg in (main, det, parser):
        cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.5  # a test-time choice, not a module
    assert architecture_key(det) == architecture_key(parser) == architecture_key(main)
    assert det.MODEL.QANET.TRAIN_MODE == "detector" and parser.MODEL.QANET.TRAIN_MODE == "parser"
    assert parser.MODEL.QANET.DETECTOR_WEIGHTS == det.OUTPUT_DIR + "/model_final.pth"
    assert parser.DATALOADER.SAMPLE_UNIT == "face" and list(parser.DATASETS.TRAIN) == list(main.DATASETS.TRAIN)
    assert list(det.DATASETS.TRAIN) == list(main.DATASETS.TRAIN)
