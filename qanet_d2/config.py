"""Config keys of qanet_d2, added to detectron2's defaults by :func:`add_qanet_config`.

The config is the project's only switchboard: every weight, threshold and mode that the
model, data pipeline, evaluator and tools read is a key here, with the report's setting as
the default unless noted. Sizes are (height, width) in pixels.
"""
from detectron2.config import CfgNode as CN

from .modeling.postprocessing import add_postprocessing_config
from .video import add_video_config


def add_qanet_config(cfg: CN) -> CN:
    """Add qanet_d2's keys to a detectron2 config (in place) and return it."""
    _C = cfg

    # ------------------------------------------------------------------ model
    _C.MODEL.META_ARCHITECTURE = "QANetFaceParser"

    # Face detector: detectron2's FCOS with one class ("face") on MODEL.BACKBONE
    # (the report: ResNet-50-FPN with P6/P7 computed from P5).
    _C.MODEL.FCOS = CN()
    _C.MODEL.FCOS.NUM_CLASSES = 1
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    _C.MODEL.FCOS.NUM_CONVS = 4
    _C.MODEL.FCOS.HEAD_NORM = "GN"
    _C.MODEL.FCOS.PRIOR_PROB = 0.01
    _C.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    _C.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    _C.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    _C.MODEL.FCOS.SCORE_THRESH_TEST = 0.2
    _C.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    _C.MODEL.FCOS.NMS_THRESH_TEST = 0.6
    # Weight of the detector's losses in joint training.
    _C.MODEL.FCOS.LOSS_WEIGHT = 1.0
    # ImageNet weights of the detector's ResNet (MODEL.BACKBONE's bottom-up network), loaded
    # strictly when training starts, unless a checkpoint provides the detector: a detectron2
    # model-zoo file ("detectron2://ImageNetPretrained/MSRA/R-50.pkl", R-101.pkl: Caffe2 format,
    # BGR, mean [103.530, 116.280, 123.675], std [1, 1, 1], STRIDE_IN_1X1 True, NORM FrozenBN),
    # a torchvision resnet*.pth (RGB, ImageNet mean/std, STRIDE_IN_1X1 False), a URL or a local
    # path. MODEL.PIXEL_MEAN/STD and INPUT.FORMAT must match the file (checked when loading).
    # "" = random initialisation. See docs/pretrained.md.
    _C.MODEL.FCOS.BACKBONE_WEIGHTS = ""
    # The detector sees the model input ("image") resized by this factor, while the parser
    # crops from the unscaled input: a cheap detector on small images, detailed face crops.
    _C.MODEL.FCOS.INPUT_SCALE = 1.0
    # INPUT_SCALE at inference (evaluation, predictor, video, export); 0: INPUT_SCALE. A smaller
    # test scale makes the detector cheaper where its training sizes cover the smaller faces.
    _C.MODEL.FCOS.INPUT_SCALE_TEST = 0.0

    # YuNet (libfacedetection.train, Apache-2.0), pretrained on WIDER FACE; never trained here.
    _C.MODEL.YUNET = CN()
    _C.MODEL.YUNET.VARIANT = "n"  # "n" (77.9 k parameters) or "s" (54.6 k)
    # The released state dict, loaded strictly when the model is built; a relative path is
    # looked up from the working directory, then from the repository root.
    _C.MODEL.YUNET.WEIGHTS = "models/yunet/yunet_n.pth"
    # Faces are kept from this score (sigmoid(cls) x sigmoid(obj), the authors' score).
    _C.MODEL.YUNET.SCORE_THRESH_TEST = 0.5
    _C.MODEL.YUNET.NMS_THRESH_TEST = 0.45
    _C.MODEL.YUNET.TOPK_CANDIDATES_TEST = 1000
    # The detector sees the model input resized by each factor of SCALES_TEST (2.0: faces of
    # half the size are found; 0.5: faces larger than its 640 px training crops), the longer
    # side capped at MAX_SIZE_TEST (0: no cap); the detections of all sizes are merged by NMS.
    _C.MODEL.YUNET.SCALES_TEST = (1.0,)
    _C.MODEL.YUNET.MAX_SIZE_TEST = 1920

    # Keep convolution weights (hence activations) in channels-last (NHWC) memory order.
    # Same results; about 15 % faster training on CPUs with oneDNN (measured on the quickstart).
    _C.MODEL.CHANNELS_LAST = False

    _C.MODEL.QANET = CN()
    # The face detector, a registered part (qanet_d2.modeling.detectors.FACE_DETECTOR_REGISTRY),
    # built from its own subtree: "FCOS" (the report's, trainable; MODEL.FCOS) or "YuNet"
    # (pretrained on WIDER FACE, frozen; MODEL.YUNET). "" = no detector: a parser-only model
    # (TRAIN_MODE "parser" with TEST_BOXES "gt", or boxes given to the predictor).
    _C.MODEL.QANET.DETECTOR = CN()
    _C.MODEL.QANET.DETECTOR.NAME = "FCOS"
    # Box adapter: the detector's face box and five landmarks -> the head box the parser was
    # trained on (hair top to chin, ears included). 44 numbers, the 4 x 11 matrix of
    # qanet_d2.modeling.detectors.box_adapter.HeadBoxAdapter (fitted by tools/fit_box_adapter.py).
    # Empty: the detector's boxes as they are (FCOS is trained on head boxes).
    _C.MODEL.QANET.DETECTOR.BOX_ADAPTER = []
    # Number of parsing classes, background included. Must match the model's label set.
    _C.MODEL.QANET.NUM_CLASSES = 19
    # The (fine) label set the model predicts, recorded in the config and in every checkpoint:
    # the model is built from it and never reads a dataset catalog. NAME: a registered set
    # ("synthetic", "celebamask_hq", "lapa", "helen", "fasseg") or the set of a dataset of the
    # config ("sfp"); "" = the set of the first dataset of DATASETS.TRAIN (else DATASETS.TEST).
    # CLASSES, COLORS ((R, G, B) per class) and FLIP_PAIRS ((id_a, id_b) swapped by a mirror) are
    # filled from that set when train_net.py sets the config up (fill_model_label_set); written by
    # hand, they define a set that no dataset registers. A checkpoint whose label set differs
    # from the config's is refused.
    # Training datasets in other sets: a set that converts into the model's (at least as fine)
    # has its labels converted in the mapper; a coarser set keeps its labels and its crops'
    # losses are computed on the model's probabilities summed into its classes (see
    # qanet_d2/data/mixed_label_sets.py). A coarser test set is scored on predictions converted
    # into its classes.
    _C.MODEL.QANET.LABEL_SET = CN()
    _C.MODEL.QANET.LABEL_SET.NAME = ""
    _C.MODEL.QANET.LABEL_SET.CLASSES = []
    _C.MODEL.QANET.LABEL_SET.COLORS = []
    _C.MODEL.QANET.LABEL_SET.FLIP_PAIRS = []
    # "joint": detector losses on full images + parser losses on ground-truth face crops;
    # "detector": detector only; "parser": parser only (ground-truth boxes, detector frozen/absent).
    _C.MODEL.QANET.TRAIN_MODE = "joint"
    # Boxes the parser uses at test time: "detector" (its own detections) or "gt" (the
    # dataset's face boxes, to measure parsing alone).
    _C.MODEL.QANET.TEST_BOXES = "detector"
    # Assemble the model from part checkpoints, applied after MODEL.WEIGHTS: the detector.* /
    # parser.* weights of these files (qanet_d2 checkpoints or bare part state dicts), each loaded
    # strictly into its part. A checkpoint that records its part as untrained is refused.
    # Stage-wise training: stage 2 sets DETECTOR_WEIGHTS to stage 1's model_final.pth.
    _C.MODEL.QANET.DETECTOR_WEIGHTS = ""
    _C.MODEL.QANET.PARSER_WEIGHTS = ""

    # Parser input crop. The box keeps its centre, its shorter side grows until
    # width / height == ASPECT_RATIO, then both sides are multiplied by BOX_EXPAND.
    _C.MODEL.QANET.INPUT_SIZE = (512, 384)  # (height, width)
    _C.MODEL.QANET.ASPECT_RATIO = 0.75  # width / height
    _C.MODEL.QANET.BOX_EXPAND = 1.25
    # Parser pixel normalisation (RGB order after conversion from INPUT.FORMAT); ImageNet stats.
    _C.MODEL.QANET.PIXEL_MEAN = [123.675, 116.28, 103.53]
    _C.MODEL.QANET.PIXEL_STD = [58.395, 57.12, 57.375]

    # Parser backbone: a name in detectron2's BACKBONE_REGISTRY, built on a config whose
    # MODEL.RESNETS / MODEL.QANET.HRNET describe it.
    _C.MODEL.QANET.BACKBONE = CN()
    _C.MODEL.QANET.BACKBONE.NAME = "build_timm_hrnet_backbone"
    # Backbone features fed to the neck, from stride 4 to stride 32.
    _C.MODEL.QANET.BACKBONE.OUT_FEATURES = ["hr4", "hr8", "hr16", "hr32"]
    _C.MODEL.QANET.BACKBONE.FREEZE_AT = 0
    # For a ResNet parser backbone: depth and the keys of MODEL.RESNETS used for it.
    _C.MODEL.QANET.BACKBONE.RESNET_DEPTH = 50
    # Norm of a ResNet parser backbone. "BN": fine-tuned, like the HRNet's (32 crops per GPU).
    _C.MODEL.QANET.BACKBONE.NORM = "BN"
    # Stride of a ResNet-50/101 parser backbone's blocks in the 1x1 conv (MSRA) or the 3x3 conv
    # (False: torchvision's ResNets, whose ImageNet weights RESNET_WEIGHTS loads).
    _C.MODEL.QANET.BACKBONE.STRIDE_IN_1X1 = False
    # ImageNet weights of a ResNet parser backbone: torchvision's resnet*.pth (a URL or a local
    # path), loaded strictly when training starts unless a checkpoint provides the parser.
    # The parser takes RGB crops with MODEL.QANET.PIXEL_MEAN/STD (ImageNet's). "" = random init.
    _C.MODEL.QANET.BACKBONE.RESNET_WEIGHTS = ""

    # HRNet from timm (features_only, raw branch outputs at strides 4/8/16/32).
    _C.MODEL.QANET.HRNET = CN()
    _C.MODEL.QANET.HRNET.NAME = "hrnet_w48"  # hrnet_w18_small, hrnet_w18, hrnet_w32, hrnet_w48, ...
    # Initialise the HRNet from timm's ImageNet weights when training starts (unless a
    # checkpoint provides the parser), loaded strictly: from PRETRAINED_PATH when set, else from
    # the Hugging Face hub (fails with a clear message without network access). False (the
    # default; the CPU configs keep it) = random initialisation. See docs/pretrained.md.
    _C.MODEL.QANET.HRNET.PRETRAINED = False
    # Local file with the ImageNet weights of HRNET.NAME in timm's key format (.pth /
    # .safetensors; the HRNet authors' hrnetv2_w48_imagenet_pretrained.pth has the same keys).
    _C.MODEL.QANET.HRNET.PRETRAINED_PATH = ""
    _C.MODEL.QANET.HRNET.NORM = "BN"

    # Semantic-FPN neck ("PFPN"): per level, conv-BN-ReLU(+upsample x2) repeated so that all
    # levels reach stride 4, then summed.
    _C.MODEL.QANET.NECK = CN()
    _C.MODEL.QANET.NECK.CONV_DIM = 256
    _C.MODEL.QANET.NECK.NORM = "BN"

    # Parsing branch: 1x1 conv to NUM_CLASSES, bilinear upsampling to the crop size.
    _C.MODEL.QANET.PARSING = CN()
    _C.MODEL.QANET.PARSING.CE_WEIGHT = 1.0
    _C.MODEL.QANET.PARSING.LOVASZ_WEIGHT = 1.0
    # Lovasz-softmax per crop, then averaged over the crops of the batch (True, as the official
    # QANet code; a crop without valid pixels counts 0 there), or over all valid pixels of the
    # batch (False).
    _C.MODEL.QANET.PARSING.LOVASZ_PER_CROP = True

    # IoU ("quality") branch: 1x1 conv + ReLU, global pooling, two FC layers, one output.
    _C.MODEL.QANET.IOU = CN()
    _C.MODEL.QANET.IOU.CONV_DIM = 256
    _C.MODEL.QANET.IOU.FC_DIM = 512
    _C.MODEL.QANET.IOU.LOSS_WEIGHT = 1.0

    # Crop augmentation in training (on ground-truth boxes).
    _C.MODEL.QANET.AUG = CN()
    _C.MODEL.QANET.AUG.ENABLED = True
    _C.MODEL.QANET.AUG.SCALE_STD = 0.3  # box scale factor N(0,1)*std + 1 ...
    _C.MODEL.QANET.AUG.SCALE_RANGE = (0.7, 1.3)  # ... clipped to this range
    _C.MODEL.QANET.AUG.ROTATION_STD = 40.0  # degrees, N(0,1)*std ...
    _C.MODEL.QANET.AUG.ROTATION_MAX = 80.0  # ... clipped to +-max
    _C.MODEL.QANET.AUG.ROTATION_PROB = 0.6
    _C.MODEL.QANET.AUG.FLIP_PROB = 0.5  # left/right labels swapped from the dataset's flip pairs
    # Box centre jitter, N(0,1)*std times the box width/height, clipped to +-2 std. Not in the
    # report (0 = off); it makes the parser robust to a weak detector's box errors.
    _C.MODEL.QANET.AUG.SHIFT_STD = 0.0
    # Off-face crops: with this probability a training crop is moved off its face (centre shifted
    # by U(OFF_FACE_SHIFT) box sizes in a random direction, box scaled by U(OFF_FACE_SCALE)), with
    # the labels found there, mostly background: crops like a detector's false box beside or
    # around a face (clothes, a torso). At 0.15 they did not stop the real-face parser from
    # labelling a coat in such a box hair (MODEL_ZOO.md). 0 = off (no random draw).
    _C.MODEL.QANET.AUG.OFF_FACE_PROB = 0.0
    _C.MODEL.QANET.AUG.OFF_FACE_SHIFT = (0.5, 1.5)
    _C.MODEL.QANET.AUG.OFF_FACE_SCALE = (1.0, 3.0)
    # Label of training-crop pixels outside the image (the batch padding included): "background"
    # (as the official QANet code: they count in the losses and in the IoU target) or "ignore"
    # (255, the ignore label of every label set: no loss there). The crop's image pixels there are the mean colour.
    _C.MODEL.QANET.CROP_OUTSIDE_LABEL = "background"
    # --- Other faces inside a training crop ------------------------------------------------------
    # Labels of the pixels of OTHER faces inside a face's training crop, where the frame has a
    # face-instance map (its dataset's instance_file): "background" (as the official QANet code:
    # a crop's labels are its own face's) or "keep" (their part labels stay).
    _C.MODEL.QANET.CROP_OTHER_FACES = "background"
    # ------------------------------------------------------------------------------------------
    # Faces parsed per frame in training (largest first; DATALOADER.SAMPLE_UNIT "image"); bounds
    # memory on crowded frames.
    _C.MODEL.QANET.MAX_FACES_PER_IMAGE_TRAIN = 16

    # Inference: faces parsed per image (the detector's best, by box score) and per forward of
    # the parser (bounds memory); scoring, paste-back and painting: add_postprocessing_config.
    _C.MODEL.QANET.INFERENCE = CN()
    _C.MODEL.QANET.INFERENCE.MAX_PARSED_FACES = 100
    _C.MODEL.QANET.INFERENCE.PARSER_BATCH = 32
    add_postprocessing_config(_C)

    # ------------------------------------------------------------------ data
    # Input resizing of full images for the detector (detectron2's keys), kept small by default
    # because faces are parsed from crops of the original image.
    _C.INPUT.MIN_SIZE_TRAIN = (640, 672, 704, 736, 768, 800)
    _C.INPUT.MAX_SIZE_TRAIN = 1333
    _C.INPUT.MIN_SIZE_TEST = 800
    _C.INPUT.MAX_SIZE_TEST = 1333
    # Image-level horizontal flip is done on the face crops (with label swapping) instead.
    _C.INPUT.RANDOM_FLIP = "none"
    # Training frames are turned to grey (the same grey in the three channels, before the face
    # crops are cut) with this probability: colour-free photos (old portraits, CCTV) then look
    # like training data. 0 draws no random number (runs stay as they were).
    _C.INPUT.GRAYSCALE_PROB = 0.0
    # Zoom-out of training frames (the detector's view only; face crops are cut before): with
    # probability PROB the frame is placed at a random position on a canvas U(1, MAX_SCALE)
    # times its size, filled with its mean grey, before the resize. 0 = off (no random draw).
    _C.INPUT.ZOOM_OUT = CN()
    _C.INPUT.ZOOM_OUT.PROB = 0.0
    _C.INPUT.ZOOM_OUT.MAX_SCALE = 2.0
    _C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    # Sampling ratio of each dataset of DATASETS.TRAIN (same order, positive numbers, normalised
    # to sum 1): the share of training samples drawn from it, whatever its size. Empty = every
    # sample equally likely (datasets in proportion to their size, detectron2's TrainingSampler).
    _C.DATALOADER.TRAIN_RATIOS = []
    # Training sample: "image" (a frame with all its faces: the detector's full frame and the
    # parser's crops of its faces; SOLVER.IMS_PER_BATCH counts frames) or "face" (one face crop,
    # as the official QANet code trains its parser: the dataset is the list of labelled faces, an
    # epoch visits each once and SOLVER.IMS_PER_BATCH counts crops; MODEL.QANET.TRAIN_MODE
    # "parser" only). Either way the crops are cut in the data-loader workers from the
    # original-resolution frame, with the same augmentation (qanet_d2/data/instance_mapper.py).
    _C.DATALOADER.SAMPLE_UNIT = "image"

    # Generated face-video datasets (face_synth_*, face_composite_*): generated on first use
    # when missing.
    _C.DATASETS.SYNTHETIC = CN()
    _C.DATASETS.SYNTHETIC.AUTO_GENERATE = True

    add_video_config(_C)

    # ------------------------------------------------------------------ solver
    _C.SOLVER.OPTIMIZER = "ADAM"  # SGD, ADAM or ADAMW
    _C.SOLVER.BETAS = (0.9, 0.999)  # Adam/AdamW
    # No weight decay by default: the official QANet code's Adam gets none (its yaml's 1e-4 is
    # never passed to the optimizer). SGD configs (the FCOS detector stage) set detectron2's 1e-4.
    _C.SOLVER.WEIGHT_DECAY = 0.0
    # Iterations between metric writes (console, metrics.json, TensorBoard); metrics.json holds
    # the median over this many iterations, so 1 records every iteration's raw losses.
    _C.SOLVER.LOG_PERIOD = 20
    # Learning-rate rule when the number of processes differs from detectron2's
    # SOLVER.REFERENCE_WORLD_SIZE (the GPU configs: 8), which rescales the total batch, the LR and
    # every length in iterations (qanet_d2/engine/world_size.py lists the keys): "linear"
    # (detectron2's rule, derived for SGD), "sqrt" (the rule for Adam), or "auto": sqrt for
    # ADAM/ADAMW, linear for SGD.
    _C.SOLVER.LR_SCALING = "auto"
    # --- Schedules in epochs (converted to iterations when training starts) ---------------------
    # SOLVER.EPOCHS > 0 states the schedule in epochs of the run's training samples (frames, or
    # faces with DATALOADER.SAMPLE_UNIT "face"): at start-up, after the rescaling to the number of
    # processes, iterations per epoch = samples / SOLVER.IMS_PER_BATCH and MAX_ITER, STEPS and
    # WARMUP_ITERS are computed from EPOCHS, STEPS_EPOCHS and WARMUP_EPOCHS (their iteration
    # values are then not used), CHECKPOINT_PERIOD and TEST.EVAL_PERIOD from their *_EPOCHS keys
    # where those are > 0 (qanet_d2/engine/epochs.py; logged once). 0 = iterations as written.
    # EPOCHS and the periods are whole epochs, WARMUP_EPOCHS a float, STEPS_EPOCHS any numbers.
    _C.SOLVER.EPOCHS = 0
    _C.SOLVER.STEPS_EPOCHS = ()
    _C.SOLVER.WARMUP_EPOCHS = 0.0
    _C.SOLVER.CHECKPOINT_PERIOD_EPOCHS = 0
    _C.TEST.EVAL_PERIOD_EPOCHS = 0
    # ------------------------------------------------------------------------------------------
    # detectron2's SOLVER.AMP.ENABLED (default False) turns on mixed precision training: float16
    # autocast with a GradScaler on CUDA, bfloat16 autocast (no scaler needed) on CPU. Losses are
    # computed in float32 either way.

    # ------------------------------------------------------------------ test
    # Test-time augmentation of the parser (detectron2's TEST.AUG.ENABLED / FLIP are reused):
    # flip averages with the mirrored crop (left/right channels swapped back); BOX_SCALES
    # enlarge or shrink the box context. All views are averaged after pasting back.
    _C.TEST.AUG.BOX_SCALES = (1.0,)
    # Ensemble: checkpoints whose parser probabilities are averaged with MODEL.WEIGHTS's.
    _C.TEST.ENSEMBLE = CN()
    _C.TEST.ENSEMBLE.WEIGHTS = []
    # FaceParsingPredictor (demo, video, tools/benchmark*.py) folds the batch norms into the
    # convolutions before them (qanet_d2.modeling.fusion): same outputs up to float rounding,
    # a quarter less parser time on CPU. Evaluation during training runs the model as it trains.
    _C.TEST.FUSE_CONV_BN = True

    # Face parsing evaluation (J/F of DAVIS, mIoU, F1).
    _C.TEST.FACE_PARSING = CN()
    # A class absent from both prediction and ground truth in a frame: "skip" it (stricter)
    # or score it 1 as DAVIS does ("one").
    _C.TEST.FACE_PARSING.ABSENT_CLASS = "skip"
    # Contour tolerance: fraction of the image diagonal (< 1) or pixels (>= 1).
    _C.TEST.FACE_PARSING.BOUND_TH = 0.008
    # Also write per-frame label PNGs of the predictions under OUTPUT_DIR/inference/labels.
    _C.TEST.FACE_PARSING.SAVE_LABELS = False
    # Also report the instance-level parsing metrics of Parsing R-CNN / QANet (APp50, APvol,
    # PCP50; faces ranked by the quality score, and by the box score as "...-box") on datasets
    # with per-face ground truth (the synthetic sets' instance PNGs; single-face datasets).
    _C.TEST.INSTANCE_PARSING = True
    # --- APp's parsing NMS and score filter (the official QANet code's) ---------------------------
    # Before the instance-level metrics match faces, faces whose ranking score is below
    # SCORE_THRESH are dropped and a parsing NMS drops a face whose mean part IoU with a
    # better-scored kept face is >= NMS_THRESH (qanet_d2/evaluation/instance_parsing.py). 0 = off.
    _C.TEST.INSTANCE_PARSING_NMS_THRESH = 0.6
    _C.TEST.INSTANCE_PARSING_SCORE_THRESH = 0.01
    # ------------------------------------------------------------------------------------------
    # Also report face-detection AP (COCO) of the predicted boxes.
    _C.TEST.DETECTION_AP = False

    return cfg


def get_qanet_cfg() -> CN:
    """detectron2's default config with qanet_d2's keys added."""
    from detectron2.config import get_cfg

    return add_qanet_config(get_cfg())
