#!/usr/bin/env python
"""Train and evaluate QANet face parsing (FCOS face detector + QANet parser) with detectron2
(commands in README.md). Without CUDA, ``--num-gpus N`` runs N CPU processes over gloo.
"""
import time

import qanet_d2  # noqa: F401  (applies compat shims, registers datasets and models)
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from qanet_d2 import get_qanet_cfg
from qanet_d2.data import set_synthetic_auto_generate
from qanet_d2.data.mixed_label_sets import fill_model_label_set, prediction_conversion_note
from qanet_d2.engine import QANetCheckpointer, QANetTrainer, format_summary_line, launch, validate_config


class Trainer(QANetTrainer):
    """Override the builders here to customise training; see qanet_d2.engine.trainer."""


def setup(args):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    set_synthetic_auto_generate(cfg.DATASETS.SYNTHETIC.AUTO_GENERATE)
    try:  # the model's label set, once, into the config (and from there into its checkpoints)
        fill_model_label_set(cfg)
    except KeyError:  # a NAME that no set matches: the config check reports it
        pass
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="qanet_d2")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        validate_config(cfg, for_training=False)
        model = Trainer.build_model(cfg)
        QANetCheckpointer(model, save_dir=cfg.OUTPUT_DIR, cfg=cfg).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results, train_seconds = Trainer.test(cfg, model), None
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        start = time.perf_counter()
        trainer.train()
        results = getattr(trainer, "_last_eval_results", None)
        train_seconds = time.perf_counter() - start - Trainer.last_test_seconds
    if comm.is_main_process() and results:
        for dataset_name in cfg.DATASETS.TEST:  # eval seconds: the last Trainer.test's
            print(format_summary_line(dataset_name, results, train_seconds=train_seconds,
                                      eval_seconds=Trainer.last_test_seconds,
                                      note=prediction_conversion_note(cfg, dataset_name)), flush=True)
    return results


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
