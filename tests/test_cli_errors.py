"""Bad input to every CLI: exit code, one `error:` line naming the problem (no traceback, no
help text), and not a single file changed in the output location.

Every case runs in-process through `common.run_in_process` (the same parsing and error mapping
as the CLIs' `common.run`); a few run as real subprocesses too, which must print exactly the
same (a subprocess costs ~2 s of imports, so not all of them)."""
import concurrent.futures
import hashlib
import os
import subprocess
import sys

import pytest

from tests.conftest import run_cli_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "weights", "vit_digits")
# A checkpoint that exists: the cases about other flags must not stop at a missing one.
CKPT = os.path.join(ROOT, "tests", "fixtures", "golden", "deit_tiny.safetensors")
HUGE = "--batch_size=1000000000"

# (cli, args, exit code, message). In args: {file} an existing file, {full} a non-empty
# directory that is not ours, {out} an absent path inside the output location.
CASES = [
    ("profile", ["--min_run_time=inf", "--out_dir={out}"], 1,
     "--min_run_time=inf is not a finite number"),
    ("profile", ["--layer=9", "--out_dir={out}"], 1, "layer 9 is outside [0, 5]"),
    ("profile", ["--method=nosuch", "--out_dir={out}"], 1,
     "unknown token-reduction method 'nosuch'"),
    ("profile", ["--mode=model", "--model=test_tiny_vit", HUGE, "--out_dir={out}"], 1,
     "--batch_size=1000000000 cannot fit in memory"),
    ("profile", ["--out_dir={file}"], 1, "is a regular file, not a directory"),
    ("profile", ["--out_dir={full}"], 1, "refusing to replace"),
    ("profile", ["--model=test_tiny_vit", "--mode=model", "--tokens=0:3", "--out_dir={out}"], 1,
     "the range lists 0 .. 3; 0 is outside [2, 17]"),
    ("profile", ["--bogus"], 2, "Unknown command line flag 'bogus'"),
    ("profile", ["extra"], 2, "unexpected arguments: ['extra']"),
    ("benchmark", ["--data=none", "--min_run_time=nan", "--out_dir={out}"], 1,
     "--min_run_time=nan is not a finite number"),
    ("benchmark", ["--data=none", "--out_dir={file}"], 1,
     "is a regular file, not a directory"),
    ("benchmark", ["--data=none", "--batch_size=0", "--out_dir={out}"], 1,
     "--batch_size: 0 must be >= 1"),
    ("estimate", ["--model=test_tiny_vit", HUGE, "--out_dir={out}"], 1,
     "--batch_size=1000000000 cannot fit in memory"),
    ("estimate", ["--out_dir={file}"], 1, "is a regular file, not a directory"),
    ("estimate", ["--method=pomt", "--layer=9", "--out_dir={out}"], 1, "layer 9 outside [0, 5]"),
    ("solve", ["--profile=p.json", "--estimate=e.json", "--out_dir={file}"], 1,
     "is a regular file, not a directory"),
    ("solve", ["--profile=p.json", "--estimate=e.json", "--alpha=nan", "--out_dir={out}"], 1,
     "--alpha=nan is not a finite number"),
    ("deploy", [f"--weights={WEIGHTS}", "--out={file}"], 1,
     "is a regular file, not a directory"),
    ("deploy", [f"--weights={WEIGHTS}", "--out={full}"], 1, "already exists"),
    ("run_deployed", ["--artifact=a", "--images=i", "--output={full}"], 1,
     "is a directory, not a file"),
    ("run_deployed", ["--artifact=a", "--images=i", "--repeats=1"], 1,
     "--repeats must be >= 3"),
    ("convert", ["--model=test_tiny_vit", f"--checkpoint={CKPT}", "--img_size=0",
                 "--out={out}"], 1, "--img_size must be >= 1"),
    ("convert", ["--model=deit_smal_patch16_224", f"--checkpoint={CKPT}", "--out={out}"], 1,
     "unknown model 'deit_smal_patch16_224'. Did you mean: deit_small_patch16_224"),
    ("train_digits", ["--lr=inf", "--out={out}"], 1, "--lr=inf is not a finite number"),
    ("train_digits", ["--max_steps=0", "--out={out}"], 2,
     "--max_steps=0: 0 is not a positive integer"),
    ("train_digits", ["--out={full}"], 1, "it is a folder that is not a vitprune-weights "
     "folder (with config.json); move it away or choose another output path"),   # (not "pass
    # --overwrite", which would be refused)
    ("train_digits", ["--out={file}/w"], 1, "is a file, not a directory"),
    ("edge_kit", ["--out={file}"], 1, "is a regular file, not a directory"),
    ("edge_kit", ["--batch_sizes=0", "--out={out}"], 1, "--batch_sizes: 0 must be >= 1"),
    ("edge_kit", ["--driver=local-turbo", "--out={out}"], 1,
     "IREE driver 'local-turbo' cannot run target iree:host; expected one of local-task, "
     "local-sync"),
    ("prune", ["--batch_size=x"], 2, "flag --batch_size=x"),
    ("profile", ["--refine_accuracy_rounds=2", "--out_dir={out}"], 1,
     "--refine_accuracy_rounds applies to --solver=multi only"),
    ("profile", ["--solver=multi", "--refine_accuracy_rounds=-1", "--out_dir={out}"], 2,
     "flag --refine_accuracy_rounds=-1: -1 is not a non-negative integer"),
    ("edge_kit", ["--cpu_cores=0", "--out={out}"], 1, "--cpu_cores must be >= 1, got 0"),
    ("edge_kit", ["--schedules=full", "--out={out}"], 1, "--schedules applies to --mode=schedule"),
    ("edge_kit", ["--overwrite", "--out={full}"], 1, "refusing to replace"),
    ("prune", ["--method=pomt", "--evit_normalize"], 1,
     "--evit_normalize applies to --method=evit only, not --method=pomt"),
    ("prune", ["--method=tome", "--random_seed=3"], 1, "--random_seed applies to --method=random"),
    ("edge_kit", ["--mode=schedule", "--schedules=full", "--tokens=65", "--out={out}"], 1,
     "--tokens applies to --mode=model"),
    ("solve", ["--profile=p.json", "--estimate=e.json", "--step_bottoms_only", "--out_dir={out}"],
     1, "--step_bottoms_only applies to --mode=multi only"),
    ("solve", ["--profile=p.json", "--estimate=e.json", "--mode=multi", "--layer=2",
               "--out_dir={out}"], 1, "--layer applies to --mode=paper only"),
    ("solve", ["--profile=p.json", "--estimate=e.json", "--min_run_time=1", "--out_dir={out}"], 1,
     "--min_run_time is read only with --weights"),
    ("edge_kit", ["--cpu_cores=4", "--driver=local-task", "--out={out}"], 1,
     "--cpu_cores applies to CPU targets whose driver is chosen automatically"),
    ("edge_kit", ["--cpu_cores=4", "--target=iree:cuda:sm_87", "--out={out}"], 1,
     "--cpu_cores applies to CPU targets"),
    ("deploy", [f"--weights={WEIGHTS}", "--cpu_cores=2", "--out={out}"], 1,
     "--cpu_cores needs an IREE CPU target (iree:host or iree:llvm-cpu:...)"),
    ("deploy", [f"--weights={WEIGHTS}", "--cpu_cores=-1", "--target=iree:host", "--out={out}"],
     1, "--cpu_cores must be >= 1, got -1"),
    ("estimate", ["--out_dir={full}", "--out_name=notes.txt", "--overwrite", "--tokens=65,33",
                  "--num_images=20"], 1, "refusing to replace"),
    ("run_deployed", ["--artifact={out}", "--images={out}", "--output={file}"], 1,
     "refusing to replace"),
    ("profile", ["--out_dir=/proc/vitprune_out", "--num_images=20"], 1,
     "--out_dir=/proc/vitprune_out: cannot write in /proc"),
    ("estimate", ["--init_seed=5", "--out_dir={out}"], 1, "--init_seed seeds random weights"),
    ("estimate", ["--split=all", "--data={full}", "--out_dir={out}"], 1,
     "--split applies to --data=digits only"),
    ("estimate", ["--tokens=", "--out_dir={out}"], 1, "--tokens is empty"),
    ("train_digits", ["--out="], 1, "--out is empty"),
    ("convert", ["--model=test_tiny_vit", f"--checkpoint={CKPT}", "--out="], 1,
     "--out is empty"),
    ("deploy", [f"--weights={WEIGHTS}", "--method=evit", "--method_opts=normalize=maybe",
                "--schedule=keep@3:33", "--out={out}"], 1,
     "method 'evit' option normalize must be bool, got 'maybe'"),
    ("profile", ["--out_dir="], 1, "--out_dir is empty"),
    ("profile", ["--mode=model", "--tokens=65", "--out_dir="], 1, "--out_dir is empty"),
    ("solve", ["--profile=p", "--estimate=e", "--accuracy_floor=-1"], 2,
     "flag --accuracy_floor=-1: -1.0 is not a number in the range [0.0, 1.0]"),
    ("solve", ["--profile=p", "--estimate=e", "--loop_neighbours=-1"], 2,
     "flag --loop_neighbours=-1: -1 is not an integer in the range [0, 1000]"),
    ("solve", ["--profile=p", "--estimate=e", "--eval_batch_size=0"], 2,
     "flag --eval_batch_size=0: 0 is not a positive integer"),
    ("estimate", ["--out_dir={out}", "--out_name=../escape.json"], 1,
     "--out_name=../escape.json must be a file name, not a path"),
    ("estimate", ["--out_dir={out}", "--out_name=.json"], 1,
     "--out_name=.json is a hidden name (it starts with '.'): name the estimate so that it "
     "shows, e.g. --out_name=estimate.json"),
    ("deploy", [f"--weights={WEIGHTS}", "--symbolic_batch", "--batch_size=4", "--out={out}"], 1,
     "--batch_size applies without --symbolic_batch"),
    ("deploy", [f"--weights={WEIGHTS}", "--allow_batch_mismatch", "--out={out}"], 1,
     "--allow_batch_mismatch applies with --solution only"),
    ("deploy", [f"--weights={WEIGHTS}", "--method=random", "--method_opts=seed=3,seed=4",
                "--schedule=keep@3:33", "--out={out}"], 1, "--method_opts gives 'seed' twice"),
    ("deploy", [f"--weights={WEIGHTS}", "--dtype=bfloat16", "--target=iree:host",
                "--out={out}"], 1, "IREE targets compile float32 graphs only (a bfloat16 "
     "dot_general does not legalize for iree:host); deploy bfloat16 for --target=jax alone"),
    ("deploy", [f"--weights={WEIGHTS}", "--batch_size=10000000", "--out={out}"], 1,
     "cannot fit"),
    ("edge_kit", ["--out={out}", "--cache_dir={file}"], 1, "is a regular file, not a dir"),
    ("edge_kit", ["--out={out}", "--dtype=bfloat16"], 1,
     "IREE targets compile float32 graphs only"),
    ("edge_kit", ["--out={out}", "--mode=schedule", "--schedules=keep@3:35;keep@3:35"], 1,
     "--schedules lists a schedule twice"),
    ("train_digits", ["--out={full}", "--overwrite", "--max_steps=1", "--epochs=1",
                      "--warmup_epochs=0"], 1, "refusing to replace"),   # before training
    ("train_digits", ["--seed=4294967296", "--out={out}"], 2,
     "flag --seed=4294967296: 4294967296 is not"),          # jax keys wrapped it to seed 0
    ("train_digits", ["--max_shift=32", "--out={out}"], 1,
     "max_shift 32 must be below the image size 32"),
    ("convert", ["--model=test_tiny_vit", f"--checkpoint={CKPT}", "--img_size=4096",
                 "--verify", "--out={out}"], 1,
     "--verify (two images through the model) cannot fit in memory"),   # was an XLA OOM traceback
    ("profile", ["--solver=multi", "--layer=2", "--accuracy_floor=0.9", "--out_dir={out}"], 1,
     "--layer applies to --solver=paper only"),           # ran, and the layer was not used
    ("profile", ["--solver=multi", "--alpha=0.2", "--accuracy_floor=0.9", "--out_dir={out}"], 1,
     "--alpha weighs the utility, which is used only without --accuracy_floor"),
    ("solve", ["--profile=p", "--estimate=e", "--mode=multi", "--accuracy_floor=0.9",
               "--alpha=0"], 1, "--alpha weighs the utility, which multi mode uses only"),
    ("solve", ["--profile=p", "--estimate=e", "--mode=multi", "--step_k=0"], 1,
     "--step_k applies with --step_bottoms_only only"),
    ("solve", ["--profile=p", "--estimate=e", "--batch_size=0"], 2,      # read the profiles first
     "--batch_size=0: 0 is not a positive integer"),
    ("benchmark", ["--min_run_time=1e308", "--out_dir={out}"], 1,       # ran for days
     "min_run_time must be at most 3600 seconds per point"),
    ("digits_images", [], 1, "--out is required"),
    ("digits_images", ["--out={out}", "--limit=360"], 1,
     "--limit=360 exceeds the 359 digits of the test split"),
    ("digits_images", ["--out={full}", "--overwrite"], 1,
     "it is a folder that is not a vitprune-digits-imagefolder folder"),
    ("digits_images", ["--out={file}"], 1, "is a regular file, not a directory"),
    ("digits_images", ["--out={file}/x"], 1, "is a file, not a directory"),
    ("benchmark", ["--data=none", "--out_dir={file}/"], 1,          # found at the final write
     "is a regular file, not a directory"),
    ("digits_images", ["--out={out}", "--split=val"], 2, "value should be one of"),
    ("estimate", ["--out_dir={out}", "--split=Test"], 2, "value should be one of"),
    ("prune", ["--repeats=1000000000000"], 1, "--repeats must be at most 10000000"),  # ran
    ("prune", ["--warmup=1000000000000"], 1, "--warmup must be at most 10000000"),    # for days
    ("convert", ["--model=test_tiny_vit", f"--checkpoint={CKPT}", "--out={file}/"], 1,
     "is a regular file, not a directory"),     # said "already exists (pass --overwrite", which
    ("convert", ["--model=test_tiny_vit", f"--checkpoint={CKPT}", "--out={full}",   # it refused
                 "--overwrite"], 1, "that is not a vitprune-weights folder"),   # not ours
    ("prune", ["--model="], 1, "--model is empty (leave it out for the default vit_digits)"),
    ("benchmark", ["--solution=", "--out_dir={out}"], 1, "--solution is empty"),  # ran without
    ("profile", ["--solver=multi", "--calibration_schedules=1000000000000",
                 "--out_dir={out}"], 1, "--calibration_schedules must be <= 1000 (each is a "
     "graph compiled and timed), got 1000000000000"),
    ("convert", ["--model=test_tiny_vit", "--checkpoint={full}", "--out={out}"], 1,
     "is a directory, not a checkpoint file; pass the file itself"),   # said "not found"
    ("train_digits", ["--lr=1e308", "--out={out}"], 1,      # trained 40 epochs of NaN losses
     "lr 1e+308 overflows float32, the dtype training computes in"),
    ("train_digits", ["--batch_size=100000", "--out={out}"], 1,   # after printing a line
     "--batch_size=100000 is larger than the 1438 training digits"),
    ("convert", ["--model=test_tiny_vit", f"--checkpoint={CKPT}", "--img_size=100000000",
                 "--out={out}"], 1,      # numpy's "Unable to allocate 37.3 GiB ..." after loading
     "--img_size=100000000 cannot fit in memory: converting test_tiny_vit at img_size"),
    ("solve", ["--profile=p", "--estimate=e", "--mode=multi", "--accuracy_floor=0.9",
               "--anchored_prediction"], 1,
     "--anchored_prediction reports on the accuracy refinement: pass --refine_accuracy_rounds"),
    ("profile", ["--tokens=2", "--out_dir={out}"], 1,   # chose n* = 2 at chance level
     "tokens [2] lack the full 65: the paper solver weighs every count against the unpruned"),
    ("profile", ["--out_dir={out}/" + "p" * 245], 1,      # after all the work: File name too long
     "--out_dir: the name pppppppppppppppppppppppp... is 245 bytes; at most"),
    ("estimate", ["--out_dir={out}", "--out_name=" + "e" * 240 + ".json"], 1,
     "--out_name: the name eeeeeeeeeeeeeeeeeeeeeeee... is 245 bytes; at most"),
    ("train_digits", ["--out={out}/" + "a" * 300 + "/w"], 1,     # after training: Errno 36
     "--out: the name aaaaaaaaaaaaaaaaaaaaaaaa... in it is 300 bytes; the file system holds"),
    ("estimate", ["--out_dir={out}" + ("/" + "b" * 200) * 22], 1,   # folders left behind
     "--out_dir: the path is"),
    ("edge_kit", ["--tokens=65", "--batch_sizes=1000000000", "--out={out}"], 1,  # board: traceback
     "--batch_sizes=1000000000 cannot fit in memory"),
    ("prune", ["--repeats=2"], 1,                  # timed 3 runs, reported as 2
     "--repeats must be >= 3 for a median and an IQR, got 2"),
    # the frontier measured first left the refinement's round 0 (its honest error) empty
    ("solve", ["--profile=p", "--estimate=e", "--mode=multi", "--accuracy_floor=0.9",
               "--weights=w", "--measure_frontier", "--refine_accuracy_rounds=1"], 1,
     "--measure_frontier and --refine_accuracy_rounds both measure the whole uncorrected"),
    ("profile", ["--solver=multi", "--accuracy_floor=0.9", "--measure_frontier",
                 "--refine_accuracy_rounds=1", "--out_dir={out}"], 1,
     "--measure_frontier and --refine_accuracy_rounds both measure the whole uncorrected"),
    # chose "full" and reported the unpruned graph timed against itself as a speed-up
    ("profile", ["--tokens=65", "--out_dir={out}"], 1,
     "tokens [65]: no count below the full 65 that pomt reaches in one block (from 65 it keeps"),
    ("profile", ["--method=tome", "--tokens=65,17", "--out_dir={out}"], 1,
     "tokens [65, 17]: no count below the full 65 that tome reaches in one block (from 65 it "
     "keeps at least 33): paper mode has nothing to choose; measure counts in [33, 64] too"),
    # named the file _s5 and recorded subset_seed 5 for the same images and numbers
    ("estimate", ["--method=pomt", "--tokens=65", "--seed=5", "--out_dir={out}"], 1,
     "--seed draws the --num_images subset and the --holdout_images and seeds --method=random; "
     "with none of them (all images, --method=pomt) it changes nothing"),
    ("solve", ["--profile=p", "--estimate=e", "--mode=multi", "--accuracy_floor=0.9",
               "--weights=w", "--seed=7"], 1,
     "--seed draws the --num_images subset (the estimate's) and the held-out images "
     "(--holdout_images); without either every image is used"),
    # ran, its --seed unread (trained weights, the first test digits)
    ("prune", ["--seed=5"], 1, "--seed=5 changes nothing here: vit_digits has trained weights "
     "and is run on the first test digits"),
    # wrote the folder, its marker recording a seed-5 subset it was not
    ("digits_images", ["--out={out}", "--seed=5"], 1, "--seed=5 applies with --limit only"),
    ("digits_images", ["--out={out}", "--split=all", "--split_seed=3"], 1,
     "--split_seed=3 changes nothing with --split=all"),
    # ran 22 steps and recorded max_steps 100000 as if it had stopped early
    ("train_digits", ["--epochs=1", "--warmup_epochs=0", "--max_steps=100000", "--out={out}"], 1,
     "--max_steps=100000 changes nothing: the run has 22 steps (1 epoch of 22)"),
    # its plots were read back as images of the data by the next run (accuracy fell silently)
    ("profile", ["--data={full}", "--out_dir={full}/run"], 1,
     "loc/full/run is inside --data="),
    ("benchmark", ["--data={full}", "--out_dir={full}"], 1,
     "loc/full is inside --data="),
    # compiled every module into --out, then refused to publish there ('pass --overwrite',
    # then refused that too)
    ("edge_kit", ["--tokens=65", "--out={out}", "--cache_dir={out}/cache"], 1,
     "/out/cache is --out="),
    ("edge_kit", ["--tokens=65", "--out={out}", "--cache_dir={out}"], 1,
     "or inside it: the kit is published whole over --out, so its cache cannot live there"),
    # refused by the IREE lowering only after the jax export, serialization and orbax save
    ("deploy", [f"--weights={WEIGHTS}", "--out={out}", "--symbolic_batch",
                "--target=jax,iree:host"], 1,
     "--symbolic_batch exports for the jax target only: IREE modules take a fixed batch "
     "(--target=iree:host); drop --symbolic_batch or the IREE target"),
    # a results file named .png inside the image folder broke every later run on it
    ("run_deployed", ["--artifact=a", "--images={full}", "--output={full}/3/r.png"], 1,
     "loc/full/3/r.png is inside --images="),
    ("estimate", ["--data={full}", "--out_dir={full}/3", "--out_name=est.png"], 1,
     "loc/full/3/est.png is inside --data="),
    # named the config field, not the flag (`threads must be >= 1, got 0`)
    ("profile", ["--min_run_time=-1", "--out_dir={out}"], 1,
     "--min_run_time must be > 0 and finite, got -1.0"),
    ("profile", ["--mode=model", "--max_retries=-1", "--out_dir={out}"], 1,
     "--max_retries must be >= 0, got -1"),
    ("profile", ["--threads=0", "--out_dir={out}"], 2, "flag --threads=0: 0 is not a positive"),
    ("profile", ["--mode=model", "--adaptive", "--coarse_stride=-1", "--out_dir={out}"], 2,
     "flag --coarse_stride=-1: -1 is not a non-negative integer"),
    ("profile", ["--mode=model", "--adaptive", "--coarse_stride=1000", "--out_dir={out}"], 1,
     "--coarse_stride=1000 is not below the 64-count grid's 63 steps: the coarse pass would time "
     "its two ends alone; give at most 62 (0: the automatic stride, every 4th of the 64 counts "
     "and both ends)"),
    ("benchmark", ["--data=none", "--min_run_time=0", "--out_dir={out}"], 1,
     "--min_run_time must be > 0 and finite, got 0.0"),
    # printed "speed-up: 0.840x" of the unpruned graph timed against itself
    ("prune", ["--schedule=full"], 1, "--schedule 'full' does not reduce any token: the pruned "
     "model would be the unpruned one"),
    ("prune", ["--schedule=keep@3:65"], 1, "--schedule 'keep@3:65' does not reduce any token"),
    # blamed two multi-layer solutions that were not given
    ("benchmark", ["--data=none", "--variants=defaults;x=tome:r4;DEFAULTS", "--out_dir={out}"],
     1, "--variants 'defaults;x=tome:r4;DEFAULTS': 'defaults' is given more than once"),
    ("profile", ["--mode=model", "--chunk_points=-2", "--out_dir={out}"], 2,
     "flag --chunk_points=-2: -2 is not a non-negative integer"),
    ("profile", ["--mode=model", "--max_points=40", "--out_dir={out}"], 1,
     "--max_points needs --adaptive"),
    ("profile", ["--mode=model", "--loop_neighbours=3", "--out_dir={out}"], 1,
     "--loop_neighbours applies to --mode=pipeline only, not --mode=model"),
    ("profile", ["--solver=multi", "--retime_top=3", "--out_dir={out}"], 1,
     "--retime_top applies to --solver=paper (multi times its choices in the loop: "
     "--loop_neighbours)"),
    ("profile", ["--mode=model", "--retime_top=3", "--out_dir={out}"], 1,
     "--retime_top applies to --mode=pipeline only, not --mode=model"),
    ("profile", ["--retime_top=-1", "--out_dir={out}"], 2,
     "flag --retime_top=-1: -1 is not an integer in the range [0, 1000]"),
    ("profile", ["--loop_neighbours=3", "--out_dir={out}"], 1,    # (the paper solver)
     "--loop_neighbours applies to --solver=multi with --accuracy_floor, --max_accuracy_drop "
     "or --latency_budget"),
    ("profile", ["--solver=multi", "--accuracy_floor=0.9", "--loop_neighbours=-1",
                 "--out_dir={out}"], 2, "-1 is not an integer in the range [0, 1000]"),
    # A '[' in the path: orbax globbed it when gathering the checkpoint's parts, found none,
    # and train_digits published unreadable weights with exit 0 (fault probe).
    ("train_digits", ["--out={out}[1]", "--max_steps=1"], 1,
     "orbax checkpoints (weights) cannot be written under a path holding '[' or ']'"),
    ("deploy", [f"--weights={WEIGHTS}", "--out={out}[v2]"], 1,
     "orbax checkpoints (weights) cannot be written under a path holding '[' or ']'"),
    # The held-out images: refused before any stage runs, naming the flag.
    ("profile", ["--holdout_images=0", "--out_dir={out}"], 2,
     "flag --holdout_images=0: 0 is not a positive integer"),
    ("profile", ["--holdout_images=359", "--out_dir={out}"], 1,
     "--holdout_images=359 leaves none of the 359 evaluation images to choose on: hold out at "
     "most 358"),
    ("profile", ["--num_images=40", "--holdout_images=40", "--out_dir={out}"], 1,
     "holdout_images=40 leaves none of the 40 images (num_images) to choose on"),
    ("profile", ["--mode=model", "--holdout_images=10", "--out_dir={out}"], 1,
     "--holdout_images applies to --mode=pipeline only, not --mode=model"),
    ("estimate", ["--method=pomt", "--tokens=65", "--holdout_images=359", "--out_dir={out}"], 1,
     "--holdout_images must be an int in 1..358 (of the 359 evaluation images, some must be "
     "left to choose on), got 359"),
    ("solve", ["--profile=p", "--estimate=e", "--holdout_images=9"], 1,
     "--holdout_images is read only with --weights (the in-loop check)"),
    # A maximum accuracy drop: the multi solver's, instead of a floor or a budget, in [0, 1].
    ("profile", ["--max_accuracy_drop=0.01", "--out_dir={out}"], 1,
     "--max_accuracy_drop applies to --solver=multi only"),
    ("profile", ["--solver=multi", "--max_accuracy_drop=0.01", "--accuracy_floor=0.9",
                 "--out_dir={out}"], 1, "give only one of --accuracy_floor, --max_accuracy_drop "
     "(each sets what the choice meets)"),
    ("profile", ["--solver=multi", "--max_accuracy_drop=1", "--out_dir={out}"], 1,
     "--max_accuracy_drop must be in [0, 1) (the metric's unit: 0.01 is one point), got 1.0"),
    ("profile", ["--solver=multi", "--max_accuracy_drop=0.01", "--alpha=0.3",
                 "--out_dir={out}"], 1, "--alpha weighs the utility, which is used only without "
     "--accuracy_floor / --latency_budget / --max_accuracy_drop"),
    ("profile", ["--mode=model", "--max_accuracy_drop=0.01", "--out_dir={out}"], 1,
     "--max_accuracy_drop applies to --mode=pipeline only, not --mode=model"),
    ("solve", ["--profile=p", "--estimate=e", "--max_accuracy_drop=0.01"], 1,
     "--max_accuracy_drop applies to --mode=multi only"),
    ("solve", ["--profile=p", "--estimate=e", "--mode=multi", "--max_accuracy_drop=0.01",
               "--latency_budget=0.001"], 1,
     "give only one of --latency_budget, --max_accuracy_drop (each sets what the choice meets)"),
    ("solve", ["--profile=p", "--estimate=e", "--mode=multi", "--max_accuracy_drop=-0.5"], 2,
     "flag --max_accuracy_drop=-0.5: -0.5 is not a number in the range [0.0, 1.0]"),
    ("solve", ["--profile=p", "--estimate=e", "--mode=multi", "--max_accuracy_drop=1"], 1,
     "--max_accuracy_drop must be in [0, 1) (the metric's unit: 0.01 is one point), got 1.0"),
    # A floor met by the whole 95 % interval: a multi-solver floor or drop, measured.
    ("profile", ["--floor_confidence", "--out_dir={out}"], 1,
     "--floor_confidence applies to --solver=multi with --accuracy_floor or --max_accuracy_drop"),
    ("profile", ["--solver=multi", "--latency_budget=0.001", "--floor_confidence",
                 "--out_dir={out}"], 1,
     "--floor_confidence applies to --solver=multi with --accuracy_floor or --max_accuracy_drop"),
    ("profile", ["--mode=block", "--floor_confidence", "--out_dir={out}"], 1,
     "--floor_confidence applies to --mode=pipeline only, not --mode=block"),
    ("solve", ["--profile=p", "--estimate=e", "--mode=multi", "--accuracy_floor=0.9",
               "--floor_confidence"], 1, "--floor_confidence judges measured intervals: pass "
     "--mode=multi, --weights and --accuracy_floor or --max_accuracy_drop"),
    # More calibration schedules than the token grid holds: before stage 1 began, not after.
    ("profile", ["--solver=multi", "--accuracy_floor=0.95", "--tokens=65,61",
                 "--calibration_schedules=20", "--out_dir={out}"], 1,
     "calibration_schedules=20: only 6 distinct pomt multi-layer schedules were found on the "
     "token grid [65, 61]; ask for fewer or profile more token counts (tokens)"),
    # exported, then failed in each compile (cuda and vulkan as llvm-cpu): refused up front
    ("deploy", [f"--weights={WEIGHTS}", "--dtype=bfloat16", "--target=iree:vulkan",
                "--out={out}"], 1, "IREE targets compile float32 graphs only (a bfloat16 "
     "dot_general does not legalize for iree:vulkan)"),
    # named the file _s3 and recorded subset seed 3 for every image, the numbers of no seed
    ("estimate", ["--method=pomt", "--tokens=33,65", "--num_images=359", "--seed=3",
                  "--out_dir={out}"], 1, "--seed draws the --num_images subset, but "
     "--num_images=359 is every one of the 359 images: it changes nothing"),
    # exit 0 with nothing verified and nothing in the manifest saying so
    ("deploy", [f"--weights={WEIGHTS}", "--platforms=cuda", "--verify", "--out={out}"], 1,
     "--verify checks the export on this machine's platform (cpu), which --platforms=cuda "
     "does not export: add it to --platforms or leave --verify out"),
    # recorded as the unpruned artifact's reducer ("reducer tome"), used by nothing
    ("deploy", [f"--weights={WEIGHTS}", "--method=tome", "--out={out}"], 1,
     "--method=tome given, but --schedule=full removes no token: nothing would use the reducer"),
    ("deploy", [f"--weights={WEIGHTS}", "--method=random", "--method_opts=seed=5",
                "--schedule=keep@3:65", "--out={out}"], 1,
     "--method=random / --method_opts=seed=5 given, but --schedule=keep@3:65 removes no token"),
    ("edge_kit", ["--mode=schedule", "--schedules=full", "--reducer=keep_first",
                  "--out={out}"], 1, "--reducer=keep_first given, but no schedule of "
     "--schedules removes a token: nothing would use it"),
    ("edge_kit", ["--tokens=65", "--reducer=keep_first", "--out={out}"], 1,
     "--reducer=keep_first given, but no count of --tokens removes a token"),
    ("edge_kit", ["--tokens=65,33,33", "--out={out}"], 1,      # was merged into one count
     "--tokens '65,33,33' lists [33] more than once: give each count once"),
    ("digits_images", ["--limit=359", "--seed=7", "--out={out}"], 1,   # the marker said seed 7
     "--seed=7 draws the --limit subset, but --limit=359 is every one of the 359 digits of the "
     "test split: it changes nothing"),
    # measured once, unsaid (two spellings of one schedule)
    ("profile", ["--mode=schedule", "--schedule=keep@3:33", "--schedule=65,65,65,65,33,33,33",
                 "--out_dir={out}"], 1, "--schedule gives keep@3:33 (counts 65,65,65,65,33,33,33)"
     " twice: give each schedule once"),
    # recorded in the profile, which then refused to merge with the same graphs without it
    ("profile", ["--mode=schedule", "--schedule=full", "--reducer=tome", "--out_dir={out}"], 1,
     "--reducer=tome given, but no graph of this profile removes a token: nothing would use it"),
    ("profile", ["--mode=model", "--tokens=65", "--reducer=keep_first", "--out_dir={out}"], 1,
     "--reducer=keep_first given, but no graph of this profile removes a token"),
    # said "warmup_epochs must be in [0, epochs=1], got 3", naming no flag nor the default
    ("train_digits", ["--epochs=1", "--out={out}"], 1,
     "--warmup_epochs=3 (its default) exceeds --epochs=1: give --warmup_epochs <= --epochs"),
    # said "layers have duplicates: [None, None]"
    ("estimate", ["--method=random", "--layers=embed,embed", "--tokens=65,33",
                  "--out_dir={out}"], 1, "layers have duplicates: ['embed', 'embed']"),
    # said "--out=... already exists (pass --overwrite", and with it "checkpoint file not found"
    ("convert", ["--model=test_tiny_vit", "--checkpoint=none.safetensors", "--out={full}"], 1,
     "checkpoint file not found: none.safetensors"),
    # a results folder made inside the data was read as a class by the next run (a probe)
    ("estimate", ["--data={full}", "--out_dir={full}/results"], 1,
     "loc/full/results is inside --data="),
    ("run_deployed", ["--artifact=a", "--images={full}", "--output={full}/res/p.json"], 1,
     "loc/full/res/p.json is inside --images="),
    # the reducer's options: refused before the model or the data are read
    ("estimate", ["--method=pomt", "--method_opts=x=1", "--out_dir={out}"], 1,
     "method 'pomt' accepts no options, got ['x']"),
    ("estimate", ["--method_opts=seed=3", "--out_dir={out}"], 1,
     "--method_opts gives seed=3: random drop's seed is --seed (it seeds the --num_images "
     "subset too)"),
    ("estimate", ["--method_opts=nested", "--out_dir={out}"], 1,
     "--method_opts entry 'nested' is not key=value"),
    ("estimate", ["--method_opts=nested=2", "--out_dir={out}"], 1,
     "method 'random' option nested must be bool, got 2"),
    ("prune", ["--method=pomt", "--norandom_nested"], 1,
     "--random_nested applies to --method=random only, not --method=pomt"),
    # absl's boolean parser printed its exception's tuple
    ("prune", ["--random_nested=2"], 2,
     "flag --random_nested=2: '2' is not a boolean (true or false)"),
    # the main job's method options: refused before stage 1
    ("profile", ["--method_opts=x=1", "--out_dir={out}"], 1,
     "method 'pomt' accepts no options, got ['x']"),
    ("profile", ["--method=random", "--method_opts=seed=2", "--out_dir={out}"], 1,
     "method_options gives a seed: random drop's seed is the spec's seed (--seed; it seeds the "
     "image subset too)"),
    ("profile", ["--mode=model", "--method_opts=nested=false", "--out_dir={out}"], 1,
     "--method_opts applies to --mode=pipeline only, not --mode=model"),
    # an unknown option named 'seed' among the accepted ones, then refused seed=3 (walkthrough)
    ("estimate", ["--method_opts=nestd=false", "--out_dir={out}"], 1,
     "method 'random' accepts ['nested'] (seed: --seed), got ['nestd']"),
    ("profile", ["--method=random", "--method_opts=nestd=false", "--out_dir={out}"], 1,
     "method 'random' accepts ['nested'] (seed: --seed), got ['nestd']"),
    # a missing solution file did not say which command makes one (walkthrough)
    ("deploy", [f"--weights={WEIGHTS}", "--solution={out}/none.json", "--out={out}/art"], 1,
     "none.json' does not exist (experiments.solve writes one, and the main job, python -m "
     "experiments.profile, into its solve/ folder)"),
    # --epochs=0 was told that the default --warmup_epochs=3 exceeds it (a probe)
    ("train_digits", ["--epochs=0", "--out={out}"], 1,
     "--epochs=0: train for at least 1 epoch"),
    # the main job called a folder of the profiler's own outputs "not a vitprune output" (a probe)
    ("profile", ["--out_dir={full}"], 1, "loc/full: it is a folder that is not the main job's "
     "output (its summary.json, with profile/, estimate/ and solve/); move it away"),
    # the main job named its spec's fields (accuracy_floor, solver='multi'), not its flags
    ("profile", ["--accuracy_floor=0.9", "--measure_frontier", "--out_dir={out}"], 1,
     "--accuracy_floor, --measure_frontier apply to --solver=multi only"),
    ("profile", ["--solver=multi", "--accuracy_floor=1.5", "--out_dir={out}"], 2,
     "flag --accuracy_floor=1.5: 1.5 is not a number in the range [0.0, 1.0]"),
    ("profile", ["--alpha=-0.5", "--out_dir={out}"], 2,
     "flag --alpha=-0.5: -0.5 is not a number in the range [0.0, 1.0]"),
    ("profile", ["--solver=multi", "--latency_budget=-0.5", "--out_dir={out}"], 1,
     "--latency_budget must be a positive number of seconds, got -0.5"),
    ("profile", ["--solver=multi", "--max_accuracy_drop=2", "--out_dir={out}"], 2,
     "flag --max_accuracy_drop=2: 2.0 is not a number in the range [0.0, 1.0]"),
    ("profile", ["--solver=multi", "--accuracy_floor=0.9", "--latency_budget=0.1",
                 "--out_dir={out}"], 1, "give only one of --accuracy_floor, --latency_budget "
     "(each sets what the choice meets)"),
    ("profile", ["--solver=multi", "--calibration_schedules=3", "--out_dir={out}"], 1,
     "--calibration_schedules must be >= 4 (one per reduction term of the latency model), got 3"),
    # a folder name too long for the file system was the raw "[Errno 36] File name too long"
    ("digits_images", ["--out={full}/" + "c" * 300 + "/x"], 1,
     "--out: the name " + "c" * 24 + "... in it is 300 bytes; the file system holds at most 255"),
    ("profile", ["--refine_accuracy_rounds=0", "--nomeasure_frontier", "--out_dir={out}"], 1,
     "--measure_frontier, --refine_accuracy_rounds apply to --solver=multi only"),
    ("profile", ["--layer=-1", "--out_dir={out}"], 2,
     "flag --layer=-1: -1 is not a non-negative integer"),
    # (mutation audit of experiments/convert.py, digits_images.py, solve.py, estimate.py)
    ("convert", ["--model=test_tiny_vit", "--out={out}"], 1,
     "--model and --checkpoint are required"),
    ("digits_images", ["--out={out}", "--split=all", "--limit=1798"], 1,
     "--limit=1798 exceeds the 1797 digits of the all split"),
    ("solve", ["--profile=p", "--estimate=e", "--step_k=2"], 1,
     "--step_k applies to --mode=multi only"),
    ("solve", ["--profile=p", "--estimate=e", "--mode=multi", "--weights=w"], 1,
     "--weights measures a multi-mode --accuracy_floor, --max_accuracy_drop or --latency_budget "
     "choice in the loop: pass --mode=multi and one of them"),
    ("estimate", ["--layers= ", "--out_dir={out}"], 1,
     "--layers is empty (leave it out for the default: one layer, --layer)"),
    ("estimate", ["--method=pomt", "--layer= ", "--out_dir={out}"], 1,
     "--layer is empty (leave it out for the default: embed for random, else 3)"),
    ("estimate", ["--tokens= ", "--out_dir={out}"], 1,
     "--tokens is empty (leave it out for the default: 16 evenly spaced counts)"),
    ("estimate", ["--layer=1", "--layers=all", "--out_dir={out}"], 1,
     "pass either --layer (one curve) or --layers (sensitivity table)"),
    # mutation audit of deploy.py, train_digits.py: each check at its boundary
    ("deploy", [f"--weights={WEIGHTS}"], 1, "--weights and --out are required"),
    ("train_digits", ["--batch_size=1439", "--out={out}"], 1,
     "--batch_size=1439 is larger than the 1438 training digits"),
    ("train_digits", ["--epochs=1", "--warmup_epochs=0", "--max_steps=22", "--out={out}"], 1,
     "--max_steps=22 changes nothing: the run has 22 steps (1 epoch of 22)"),
    ("prune", ["--batch_size=0"], 1, "--batch_size must be >= 1, got 0"),
    ("edge_kit", ["--jobs=0", "--out={out}"], 1, "--jobs must be >= 1, got 0"),
    ("estimate", ["--num_images=0", "--out_dir={out}"], 1, "--num_images must be >= 1, got 0"),
    # mutation audit of experiments/benchmark.py: each check of its own flags, exact text
    ("benchmark", ["--dtype=", "--out_dir={out}"], 1,
     "--dtype: empty; valid: float32, bfloat16"),
    ("benchmark", ["--dtype=float16", "--out_dir={out}"], 1,
     "--dtype: ['float16']; valid: float32, bfloat16"),
    ("benchmark", ["--dtype=float32,FLOAT32", "--out_dir={out}"], 1,
     "--dtype: duplicate values in ['float32', 'float32']"),
    ("benchmark", ["--multi_frontier=-1", "--out_dir={out}"], 1,
     "--multi_frontier must be >= 0, got -1"),
    ("benchmark", ["--eval_batch_size=0", "--out_dir={out}"], 1,
     "--eval_batch_size must be >= 1, got 0"),
    ("benchmark", ["--num_images=0", "--out_dir={out}"], 1, "--num_images must be >= 1, got 0"),
    ("benchmark", ["--eval_batch_size=1000000000", "--out_dir={out}"], 1,
     "--eval_batch_size=1000000000 cannot fit in memory: a float32 evaluation of vit_digits "
     "needs"),
    # estimate's --dtype: declared as the other CLIs' (it was exit 1, "dtype must be one of")
    ("estimate", ["--dtype=bf16", "--out_dir={out}"], 2,
     "flag --dtype=bf16: value should be one of <float32|bfloat16>"),
    # train_digits' TrainConfig checks, named by their flags (said "label_smoothing must be")
    ("train_digits", ["--label_smoothing=1.5", "--out={out}"], 1,
     "--label_smoothing must be in [0, 1), got 1.5"),
    # a subset larger than the data, named by its flag (said "num_images=5000 exceeds")
    ("estimate", ["--num_images=5000", "--out_dir={out}"], 1,
     "--num_images=5000 exceeds the 359 images available"),
    ("profile", ["--num_images=5000", "--out_dir={out}"], 1,
     "--num_images=5000 exceeds the 359 images available"),
    # said "schedule (65, 65, 65, 65, 35, 35, 35) reduces tokens but no reducer was given"
    ("deploy", [f"--weights={WEIGHTS}", "--method=none", "--schedule=keep@3:35", "--out={out}"],
     1, "--method=none, but the schedule keep@3:35 removes tokens: give the method that removes "
     "them (e.g. --method=pomt)"),
    # an input of the wrong kind named the file alone, not the flag it came through (a probe)
    ("deploy", [f"--weights={WEIGHTS}", "--solution=/proc/version", "--out={out}"], 1,
     "--solution=/proc/version: not valid JSON: Expecting value"),
    ("deploy", [f"--weights={WEIGHTS}", "--schedule=keep@3:35", "--profile=loc/full",
                "--out={out}"], 1, "--profile: profile file 'loc/full' is a directory"),
    ("deploy", [f"--weights={WEIGHTS}", "--schedule=keep@3:35", "--estimate=loc/file",
                "--out={out}"], 1, "--estimate=loc/file: not valid JSON: Expecting value"),
    ("benchmark", ["--data=none", "--multi_solution=/proc/version", "--out_dir={out}"], 1,
     "--multi_solution=/proc/version: not valid JSON: Expecting value"),
    ("solve", ["--profile=loc/full", "--estimate=loc/file", "--out_dir={out}"], 1,
     "--profile: profile file 'loc/full' is a directory"),
    ("run_deployed", ["--artifact=loc/full", "--images=loc/full"], 1,
     "--artifact=loc/full is not a deployment artifact: manifest.json is missing"),
    ("convert", ["--model=test_tiny_vit", "--checkpoint=loc/file", "--out={out}"], 1,
     "--checkpoint=loc/file: unsupported checkpoint extension ''"),
    # a folder with no image files named the folder alone, not the flag it came through; only
    # the folder's reading names it (test_estimate: a subset too large stays --num_images's)
    ("estimate", ["--data={full}", "--out_dir={out}"], 1,
     "--data: no image files (extensions .jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, "
     ".webp) directly in unlabelled dataset root '"),
    ("profile", ["--data={full}", "--out_dir={out}"], 1,
     "--data: no image files (extensions .jpg, .jpeg, "),
    ("benchmark", ["--data={full}", "--out_dir={out}"], 1,
     "--data: no image files (extensions .jpg, .jpeg, "),
    ("prune", ["--images={full}"], 1, "--images: no image files (extensions .jpg, .jpeg, "),
]


def _snapshot(root):
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for d in dirnames:
      out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
    for f in filenames:
      p = os.path.join(dirpath, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def _prepare(case_dir, args):
  """Makes `case_dir`/loc (an existing file, a non-empty foreign directory) -> (argv with the
  placeholders filled in, loc snapshot)."""
  loc = case_dir / "loc"
  loc.mkdir(parents=True)
  (loc / "file").write_text("an existing file\n")
  (loc / "full").mkdir()
  (loc / "full" / "notes.txt").write_text("someone's notes\n")
  subs = {"{file}": str(loc / "file"), "{full}": str(loc / "full"), "{out}": str(loc / "out")}
  argv = []
  for a in args:
    for k, v in subs.items():
      a = a.replace(k, v)
    argv.append(a)
  return argv, _snapshot(loc)


def _check(case_dir, before, code, stdout, stderr, index):
  _, _, want_code, message = CASES[index]
  assert code == want_code, stderr[-2000:]
  lines = stderr.strip().splitlines()
  assert "Traceback" not in stderr and "USAGE" not in stderr and "flags:" not in stderr
  assert lines and lines[0].startswith("error: ") and message in lines[0], stderr[-2000:]
  assert lines[1:] == (["(see --help)"] if want_code == 2 else []), stderr[-2000:]
  assert stdout == ""
  assert _snapshot(case_dir / "loc") == before
  assert sorted(os.listdir(case_dir)) == ["loc"]     # nothing created next to it either


@pytest.mark.parametrize("index", range(len(CASES)),
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gets_one_line_and_changes_nothing(tmp_path, index):
  cli, args, _, _ = CASES[index]
  argv, before = _prepare(tmp_path, args)
  _check(tmp_path, before, *run_cli_in_process(tmp_path, cli, argv), index)


# A library error (exit 1), an unknown flag and a flag validator (exit 2 at parse time), a stray
# positional argument (exit 2 after parsing): the real entry point (absl's app.run, the global
# FLAGS) must print what the in-process path prints.
SUBPROCESS_CASES = [1, 7, 8, 24]


def _run_subprocess(case_dir, cli, argv):
  try:
    r = subprocess.run([sys.executable, "-m", f"experiments.{cli}", *argv], cwd=str(case_dir),
                       capture_output=True, text=True, timeout=180,
                       env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT))
  except subprocess.SubprocessError as e:      # fails this case only, not all of them
    return e
  return r


@pytest.fixture(scope="module")
def subprocess_runs(tmp_path_factory):
  """The SUBPROCESS_CASES, run concurrently: {index: (case dir, process, snapshot before)}."""
  prepared = {}
  for i in SUBPROCESS_CASES:
    d = tmp_path_factory.mktemp(f"case{i}")
    prepared[i] = (d, *_prepare(d, CASES[i][1]))
  with concurrent.futures.ThreadPoolExecutor(max_workers=len(SUBPROCESS_CASES)) as pool:
    futures = {i: pool.submit(_run_subprocess, d, CASES[i][0], argv)
               for i, (d, argv, _) in prepared.items()}
    return {i: (prepared[i][0], f.result(), prepared[i][2]) for i, f in futures.items()}


def test_subprocess_cases_cover_both_exit_codes_and_parse_stages():
  codes = {CASES[i][2] for i in SUBPROCESS_CASES}
  assert codes == {1, 2}
  assert any(CASES[i][1] == ["extra"] for i in SUBPROCESS_CASES)


@pytest.mark.parametrize("index", SUBPROCESS_CASES,
                         ids=[f"{CASES[i][0]}-{i}" for i in SUBPROCESS_CASES])
def test_subprocess_prints_what_the_in_process_run_prints(subprocess_runs, tmp_path, index):
  case_dir, r, before = subprocess_runs[index]
  assert isinstance(r, subprocess.CompletedProcess), f"{CASES[index][0]}: {r}"
  _check(case_dir, before, r.returncode, r.stdout, r.stderr, index)
  argv, _ = _prepare(tmp_path, CASES[index][1])
  code, _, err = run_cli_in_process(tmp_path, CASES[index][0], argv)
  assert (code, err.replace(str(tmp_path), "<dir>")) == \
      (r.returncode, r.stderr.replace(str(case_dir), "<dir>"))


@pytest.mark.parametrize("flag", ["--help", "--helpfull"])
def test_help_prints_usage_and_succeeds(tmp_path, flag):
  # absl's help flags exit 1 after printing; asking for help is not a failure
  r = _run_subprocess(tmp_path, "solve", [flag])
  assert isinstance(r, subprocess.CompletedProcess), r
  assert (r.returncode, r.stderr) == (0, ""), r.stderr[-2000:]
  assert "--accuracy_floor" in r.stdout and "python -m experiments.solve" in r.stdout
  assert os.listdir(tmp_path) == []


def test_only_check_args_is_refused_not_passed(tmp_path):
  """absl's --only_check_args exited 0 after parsing the flags alone (`profile --only_check_args
  --batch_size=-3`, which the run refuses, said OK); it is refused with one line, exit 2, in
  the experiments CLIs and the board's CLI alike, and `=false` changes nothing."""
  want = ("error: --only_check_args checks the flags' syntax alone, not the values a run "
          "refuses; run the command itself: it checks its arguments and inputs before any "
          "work\n(see --help)\n")
  r = _run_subprocess(tmp_path, "profile", ["--only_check_args", "--batch_size=-3"])
  assert (r.returncode, r.stdout, r.stderr) == (2, "", want)
  r = subprocess.run([sys.executable, "-m", "vitprune.edge", "--only_check_args", "bench"],
                     cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, PYTHONPATH=ROOT))
  assert (r.returncode, r.stdout, r.stderr) == (2, "", want)
  r = _run_subprocess(tmp_path, "profile", ["--only_check_args=false", "--batch_size=-3"])
  assert (r.returncode, r.stdout, r.stderr) == (1, "", "error: --batch_size: -3 must be >= 1\n")
  assert os.listdir(tmp_path) == []
