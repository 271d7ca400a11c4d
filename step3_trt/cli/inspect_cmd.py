"""`step3-trt inspect PATH [--json]`."""

from __future__ import annotations

import json

from step3_trt.inspect import (format_report, inspect_config, inspect_path, path_configs,
                               preset_configs)
from step3_trt.presets import PRESETS


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="parameter counts, activated parameters, KV-cache bytes",
                       description="Report total and activated parameters per component, KV-cache "
                                   "bytes per token and weight bytes per dtype for a Step-3 "
                                   "checkpoint directory or a bare config.json. Reads only "
                                   "config.json and shard headers, so a full-size checkpoint "
                                   "takes seconds.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("path", nargs="?", help="checkpoint directory, or a config.json file")
    src.add_argument("--preset", choices=sorted(PRESETS),
                     help="inspect a built-in config instead (e.g. 'step3', the released model)")
    p.add_argument("--config", help="build config YAML: add the per-rank memory plan (weights, "
                                     "KV-cache capacity) and refuse a plan that does not fit")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.preset:
        cfg, vision = preset_configs(args.preset)
        report = inspect_config(cfg, f"preset {args.preset}", vision)
    else:
        report = inspect_path(args.path)
        cfg, vision = path_configs(args.path)
    text = format_report(report)
    if args.config:
        from dataclasses import asdict

        from step3_trt.build_config import BuildConfig
        from step3_trt.convert.memory_plan import (format_memory_plan, memory_plan,
                                                   memory_plan_dicts, vision_memory)

        build = BuildConfig.from_file(args.config)
        plan = memory_plan(cfg, build)
        tower = vision_memory(vision, cfg, build) if vision is not None else None
        report["memory_plan"] = memory_plan_dicts(plan)
        if tower is not None:
            report["vision_memory"] = asdict(tower)
        text += "\n\n" + format_memory_plan(plan, build, tower)
    print(json.dumps(report, indent=2) if args.json else text)
    return 0
