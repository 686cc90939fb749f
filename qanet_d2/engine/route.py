"""The training route a config describes, in one line (logged when training starts).

The report trained its entries stage-wise: stage 1 the detector alone on whole frames, stage 2
the parser alone on face crops with stage 1's detector frozen. Joint training (both parts in one
run) is available but is not the report's route.
"""


def training_route(cfg) -> str:
    """A one-line description of how ``cfg`` trains (``MODEL.QANET.TRAIN_MODE``,
    ``DATALOADER.SAMPLE_UNIT``, where the detector comes from)."""
    q = cfg.MODEL.QANET
    if q.TRAIN_MODE == "detector":
        return "stage-wise, stage 1: the detector alone on whole frames"
    if q.TRAIN_MODE == "parser":
        samples = "face crops (epochs of faces)" if cfg.DATALOADER.SAMPLE_UNIT == "face" else "the face crops of whole frames"
        if not q.DETECTOR.NAME or q.TEST_BOXES == "gt":
            return f"the parser alone on {samples}, ground-truth face boxes (no detector)"
        from ..modeling.detectors.build import detector_is_pretrained

        if detector_is_pretrained(q.DETECTOR.NAME) and not q.DETECTOR_WEIGHTS:
            return f"the parser alone on {samples}, the pretrained {q.DETECTOR.NAME} detector frozen"
        source = q.DETECTOR_WEIGHTS or cfg.MODEL.WEIGHTS
        return f"stage-wise, stage 2: the parser alone on {samples}, the detector of {source} frozen"
    return "joint: detector and parser trained together (not the report's route, which is stage-wise)"
