# glus: every target installs first (idempotent: a stamp file remembers a finished install).
# `make train` runs the embedded default (a tiny GLUS on synthetic videos, CPU); `make test` runs the suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.glus-installed
RECIPE ?= synthetic
SEED ?= 0
# The synthetic data of the embedded default (`make synth`): 256 training videos, valid_u balanced to 50
# expressions of each kind; the folder remembers its arguments and is rewritten when they change.
SYNTH_ARGS := --seed 0 --videos 256 --valid-per-kind 50
# The generator's version joins the arguments in the folder's record, so that data written by an older generator
# is rewritten (2: a motion phrase is used only where it fits its objects alone, `fitting_motions`).
SYNTH_STAMP := $(SYNTH_ARGS) generator=2
# The stages of the embedded default (recipes/pretrain/; docs/embedded_default.md): the segmenter and motion
# stages are committed (`make segmenter-stage`, `make motion-stage` rebuild them), the alignment stage is optional
# (`make pretrain`); a recipe uses them with segmenter_init / mllm_init.
SEGMENTER := checkpoints/synthetic/segmenter
MLLM := checkpoints/synthetic/mllm
MOTION := checkpoints/synthetic/motion
VOS_MEMORIES ?= none sam2_bank gated_linear mca
# The long videos the VOS path is scored on for drift (J&F of each object's first and last 50 frames).
LONG := data/synthetic_long
LONG_ARGS := --seed 0 --videos 8 --frames 300
# valid_u with the temporal kinds too (issue 35, in progress: event, crossing, order; docs/synthetic_data.md).
TEMPORAL := data/synthetic_temporal
TEMPORAL_ARGS := --seed 0 --videos 8 --valid-per-kind 50 --temporal-per-kind 50
RDS_RATIOS ?= 1.0 0.8 0.6
RDS_FULL := runs/rds_synthetic_full/latest
CONTROL ?= 1
DATA ?= data/synthetic
CKPT ?= runs/synthetic/latest/export
BENCH ?= mevis/valid_u
ROOT ?= $(DATA)
PRED ?= runs/predictions/$(subst /,_,$(BENCH))
SPLIT ?= mevis/train
FRACTION ?= 0.5
LABELS ?= runs/pseudolabels/$(subst /,_,$(SPLIT))
GLUS_EXPORT := runs/synthetic/latest/export
KF := runs/keyframes/synthetic_valid_u
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM := false

.PHONY: temporal install test synth pretrain motion-stage segmenter-stage check train heldout ablate eval sparse bench gpu-check gpu-wheels pseudolabel clean-venv help

help:
	@echo "make install | test | synth | check | train [RECIPE=$(RECIPE)] [CONTROL=0] | eval [CKPT= BENCH= ROOT=] | bench"
	@echo "     pseudolabel [CKPT= SPLIT=$(SPLIT) ROOT= FRACTION=$(FRACTION) LABELS=]"
	@echo "     train RECIPE=vos_synthetic [VOS_MEMORIES='$(VOS_MEMORIES)']   (the plain VOS path, one table)"
	@echo "     train RECIPE=rds_synthetic [RDS_RATIOS='$(RDS_RATIOS)']   (RDS: J&F per kept-block ratio, one table)"
	@echo "     train [SEED=N]   (the embedded default from another seed)  |  heldout [CKPT=]  |  ablate  |  pretrain"
	@echo "     motion-stage | segmenter-stage   (rebuild the committed stages the default starts from, checkpoints/synthetic/)"
	@echo "     temporal [CKPT=]   (an export on valid_u with the temporal kinds, memory on and off)"
	@echo "     gpu-check [DRY=1] [GPU_PY=python3]   (7B shapes, random weights, one CUDA GPU; DRY=1: tiny, CPU)"

install: $(STAMP)

# A CUDA torch already on the machine is kept (the venv sees it); otherwise the CPU build torch==2.13.0.
# sam2 goes in without its dependencies: they would pull torchvision and gigabytes of CUDA wheels.
$(STAMP): pyproject.toml .ci/constraints.txt
	@if $(PY) -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then \
		echo "install: keeping the CUDA torch of $(PY)"; \
		test -x $(BIN)/python || $(PY) -m venv --system-site-packages $(VENV); \
	else \
		test -x $(BIN)/python || $(PY) -m venv $(VENV); \
		$(BIN)/python -m pip install -q torch==2.13.0; \
	fi
	$(BIN)/python -m pip install -q "setuptools>=68" wheel
	$(BIN)/python -m pip install -q -c .ci/constraints.txt -e ".[test]"
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install -q --no-build-isolation --no-deps sam2==1.1.0
	$(BIN)/python -m glus.tools.env_check
	@touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q --durations=15 tests

# (Only a folder this target wrote, or older synthetic data, is ever removed: never a real dataset at DATA.)
synth: install
	@test "$$(cat $(DATA)/synth_args 2>/dev/null)" = "$(SYNTH_STAMP)" || { \
		if test -e $(DATA) && ! test -f $(DATA)/synth_args && ! test -d $(DATA)/mevis/train/JPEGImages/train_0000; \
		then echo "make synth: $(DATA) holds data it did not write; set DATA= to another folder"; exit 1; fi; \
		rm -rf $(DATA) && $(BIN)/glus data synth --out $(DATA) $(SYNTH_ARGS) && \
		echo "$(SYNTH_STAMP)" > $(DATA)/synth_args; }

# The optional alignment stage (not used by the default): the multimodal LM aligned on captions, trained from its
# seed and copied to checkpoints/synthetic/mllm. (The segmenter stage has its own target, segmenter-stage.)
pretrain: synth
	$(call stage,mllm_synthetic,$(MLLM))
# The motion stage the embedded default starts from (committed, 1 MB; about 5 hours on one core to rebuild).
# 3a. recipes/pretrain/motion_stream_synthetic.yaml, stopped at MOTION_STEPS of its 12000-step schedule; 3b. the
# name stage from 3a's export (recipes/pretrain/motion_name_synthetic.yaml), its whole 12000 steps.
# Each fit resumes where it stopped (the resumed clips and losses are those of an uninterrupted run,
# tests/test_train.py). `make train` runs this target only when the folder is missing.
MOTION_STEPS ?= 6500
NAME_STEPS ?= 12000
MOTION_CONFIGS := --config recipes/pretrain/mllm_synthetic.yaml --config recipes/pretrain/motion_synthetic.yaml \
	--config recipes/pretrain/motion_stream_synthetic.yaml
motion-stage: synth
	$(call stage_fit,$(MOTION_CONFIGS),motion_stream_synthetic,$(MOTION_STEPS),$(MOTION)_stream)
	$(call stage_fit,$(MOTION_CONFIGS) --config recipes/pretrain/motion_name_synthetic.yaml,motion_name_synthetic,$(NAME_STEPS),$(MOTION))
# The segmenter stage GLUS and the plain VOS path start from (committed, 2.3 MB; about 2 hours on one core): a
# tiny SAM-2 trained as SAM-2 is trained, on streamed scenes, its clips growing from 2 to 8 frames
# (recipes/pretrain/segmenter_synthetic.yaml, 8000 steps, 44 min), then 8000 more steps on 8-frame clips from a
# fresh learning rate (recipes/pretrain/segmenter_refine_synthetic.yaml, 67 min alone; docs/vos.md).
# Resumes where it stopped. `make train` runs this target only when the folder is missing.
SEGMENTER_STEPS ?= 8000
SEGMENTER_REFINE_STEPS ?= 8000
segmenter-stage: synth
	$(call stage_fit,--config recipes/pretrain/segmenter_synthetic.yaml,segmenter_synthetic,$(SEGMENTER_STEPS),$(SEGMENTER))
	$(call stage_fit,--config recipes/pretrain/segmenter_synthetic.yaml --config recipes/pretrain/segmenter_refine_synthetic.yaml,segmenter_refine_synthetic,$(SEGMENTER_REFINE_STEPS),$(SEGMENTER))
stage_fit = OMP_NUM_THREADS=1 $(BIN)/glus fit $(1) --name $(2) --trainer.max_steps $(3) \
	$$(ls runs/$(2)/latest/checkpoints/*.ckpt >/dev/null 2>&1 && echo --resume latest) \
	--wandb disabled && rm -rf $(4).tmp && mkdir -p $(dir $(4)) && cp -rL runs/$(2)/latest/export $(4).tmp && \
	rm -rf $(4) && mv $(4).tmp $(4)
stage = OMP_NUM_THREADS=1 $(BIN)/glus fit --config recipes/pretrain/$(1).yaml --wandb disabled && \
	rm -rf $(2).tmp && mkdir -p $(dir $(2)) && cp -rL runs/$(1)/latest/export $(2).tmp && rm -rf $(2) && \
	mv $(2).tmp $(2)

check: install
	$(BIN)/glus data check $(DATA)/mevis --format mevis
	$(BIN)/glus data check $(DATA)/refytvos --format refytvos

clean-venv:
	rm -rf $(VENV)

# SEED=N trains the embedded default from another seed (initialisation, data order, dropout) as runs/synthetic_seedN.
# One thread per fit: the figures do not depend on the machine's core count, and on 2 cores the run and its
# control train side by side in about the time of one. RECIPE=synthetic_qwen: the same on a tiny Qwen2.5-VL.
RUN := $(RECIPE)$(if $(filter-out 0,$(SEED)),_seed$(SEED))
SYNTH_FIT := OMP_NUM_THREADS=1 $(BIN)/glus fit --config recipes/$(RECIPE).yaml --seed $(SEED)

# The embedded default also trains a control whose expressions are blanked: language must matter
# (CONTROL=0 skips it and halves the time).
train: install
ifneq ($(filter $(RECIPE),synthetic synthetic_qwen),)
	@$(MAKE) --no-print-directory synth
	@test -f $(MOTION)/heads.safetensors || $(MAKE) --no-print-directory motion-stage
	@test -f $(SEGMENTER)/heads.safetensors || $(MAKE) --no-print-directory segmenter-stage
ifeq ($(CONTROL),0)
	$(SYNTH_FIT) --name $(RUN)
else
	@echo "the blank-text control trains beside the run, one thread each (its log: runs/$(RUN)-control.log)"
	@mkdir -p runs
	$(SYNTH_FIT) --name $(RUN) & r=$$!; \
	$(SYNTH_FIT) --name $(RUN)-control --model.blank_text true --model.evaluation.initial false \
		--model.evaluation.overlays 0 > runs/$(RUN)-control.log 2>&1 & c=$$!; \
	wait $$r && wait $$c || { echo "a fit failed: see above and runs/$(RUN)-control.log"; exit 1; }
	$(BIN)/glus study compare-runs runs/$(RUN)/latest runs/$(RUN)-control/latest
endif
else ifeq ($(RECIPE),selector_synthetic)
	@$(MAKE) --no-print-directory synth
	@test -f $(GLUS_EXPORT)/recipe.yaml || $(MAKE) train RECIPE=synthetic CONTROL=0
	$(BIN)/glus pseudolabel --ckpt $(GLUS_EXPORT) --data mevis/train --root $(DATA) --fraction 0.5 --seed 0 \
		--out runs/pseudolabels/synthetic_train
	$(BIN)/glus fit --config recipes/selector_synthetic.yaml
	$(BIN)/glus keyframes --ckpt runs/selector_synthetic/latest/export --data mevis/valid_u --root $(DATA) \
		--out $(KF).json
	$(BIN)/glus study keyframes-report --ckpt $(GLUS_EXPORT) --keyframes $(KF).json --data mevis/valid_u --root $(DATA) \
		--out $(KF)_report
else ifeq ($(RECIPE),vos_synthetic)
	@$(MAKE) --no-print-directory synth
	@test -f $(SEGMENTER)/heads.safetensors || $(MAKE) --no-print-directory segmenter-stage
	@test "$$(cat $(LONG)/synth_args 2>/dev/null)" = "$(LONG_ARGS)" || { rm -rf $(LONG) && \
		$(BIN)/glus data synth --out $(LONG) $(LONG_ARGS) && echo "$(LONG_ARGS)" > $(LONG)/synth_args; }
	for m in $(VOS_MEMORIES); do \
		test -f runs/vos_synthetic_$$m/latest/vos_metrics.json || $(BIN)/glus fit --config recipes/vos_synthetic.yaml \
			--config recipes/memory/$${m}_tiny.yaml --name vos_synthetic_$$m || exit 1; \
		$(BIN)/glus vos-eval --ckpt runs/vos_synthetic_$$m/latest/export --data mevis/valid_u --root $(LONG) \
			--windows 50 --out runs/vos_synthetic_$$m/latest/long --quiet || exit 1; done
	$(BIN)/glus study vos-table $(foreach m,$(VOS_MEMORIES),$(m)=runs/vos_synthetic_$(m)/latest) --control none \
		--out runs/vos_synthetic_table
else ifeq ($(RECIPE),rds_synthetic)
	@$(MAKE) --no-print-directory synth
	@test -f $(RDS_FULL)/export/recipe.yaml || $(BIN)/glus fit --config recipes/vos_synthetic.yaml \
		--config recipes/rds/tiny_deep.yaml --name rds_synthetic_full
	$(BIN)/glus rds importance --ckpt $(RDS_FULL)/export --data mevis/train --root $(DATA) --frames 64 \
		--out runs/rds_synthetic_importance.json
	for r in $(RDS_RATIOS); do \
		$(BIN)/glus fit --config recipes/vos_synthetic.yaml --config recipes/rds/tiny_deep.yaml \
			--config recipes/rds/rds_synthetic.yaml --model.init_args.builder.init_args.rds \
			"{keep_ratio: $$r, tau: 1.0, budget_weight: 1.0}" --name rds_synthetic_keep$$r || exit 1; done
	$(BIN)/glus study vos-table full=$(RDS_FULL) $(foreach r,$(RDS_RATIOS),keep$(r)=runs/rds_synthetic_keep$(r)/latest) \
		--control keep1.0 --out runs/rds_synthetic_table
else
	$(BIN)/glus fit --config recipes/$(RECIPE).yaml
endif

# Held-out behaviour: the embedded default's export (CKPT) on the valid_u of data seed 0 (the default's own, grown
# to HELDOUT_PER_KIND expressions of each kind) and of other data seeds, scored as `make train` scores it
# (runs/heldout/data_seed<N>/metrics.json), then each kind's largest change from data seed 0
# (runs/heldout/table.json). 200 per kind: with 50, a kind's mean has a standard error of about 0.025, too
# coarse for the 0.05 the default is held to.
HELDOUT_SEEDS ?= 1 2
HELDOUT_PER_KIND ?= 200
heldout: install
	for s in 0 $(HELDOUT_SEEDS); do \
		test -f data/heldout$(HELDOUT_PER_KIND)_seed$$s/mevis/valid_u/meta_expressions.json || $(BIN)/glus data synth \
			--out data/heldout$(HELDOUT_PER_KIND)_seed$$s --seed $$s --videos 4 --valid-per-kind $(HELDOUT_PER_KIND) \
			|| exit 1; \
		OMP_NUM_THREADS=1 $(BIN)/glus validate --ckpt $(CKPT) --data mevis/valid_u \
			--root data/heldout$(HELDOUT_PER_KIND)_seed$$s --out runs/heldout/data_seed$$s || exit 1; done
	$(BIN)/glus study heldout runs/heldout/data_seed0 $(foreach s,$(HELDOUT_SEEDS),runs/heldout/data_seed$(s)) \
		--out runs/heldout/table.json

# The paper's ablation on the synthetic benchmark: each row an overlay of recipes/ablate/ on recipes/synthetic.yaml,
# trained from each seed of ABLATE_SEEDS, then row 5 (key frames) on row 4's runs, then one table
# (runs/ablation.md, .json, .png). A row whose run has finished is not trained again, so an interrupted
# `make ablate` continues where it stopped.
ABLATE_ROWS := query_only context memory contrastive e2e_memory
ABLATE_SEEDS ?= 0 1
ROW_query_only := "1. query frames only"
ROW_context := "2. + context frames"
ROW_memory := "3. + memory bank (published)"
ROW_contrastive := "4. + object contrastive loss"
ROW_first := "4'. 4, streaming engine from the first frame"
ROW_keyframes := "5. + key-frame selection (streaming engine)"
ROW_e2e_memory := "6. 4 with the end-to-end memory (ours)"
ablate: install
	@$(MAKE) --no-print-directory synth
	@test -f $(MOTION)/heads.safetensors || $(MAKE) --no-print-directory motion-stage
	@test -f $(SEGMENTER)/heads.safetensors || $(MAKE) --no-print-directory segmenter-stage
	@mkdir -p runs
	for r in $(ABLATE_ROWS); do pids=""; for s in $(ABLATE_SEEDS); do \
		test -f runs/ablate_$${r}_s$$s/latest/metrics.json || { OMP_NUM_THREADS=1 $(BIN)/glus fit --wandb disabled \
			--config recipes/synthetic.yaml --config recipes/ablate/$$r.yaml --seed $$s --name ablate_$${r}_s$$s \
			--model.evaluation.initial false --model.evaluation.overlays 0 > runs/ablate_$${r}_s$$s.log 2>&1 & \
			pids="$$pids $$!"; }; done; \
		echo "ablation row $$r: seeds $(ABLATE_SEEDS) side by side (logs: runs/ablate_$${r}_s*.log)"; \
		for p in $$pids; do wait $$p || { echo "a fit of row $$r failed: see its log"; exit 1; }; done; done
	pids=""; for s in $(ABLATE_SEEDS); do { $(call ablate_keyframes,$$s) ; } >> runs/ablate_keyframes_s$$s.log 2>&1 & \
		pids="$$pids $$!"; done; \
		echo "ablation row 5: row 4's key-frame chain, seeds $(ABLATE_SEEDS) (logs: runs/ablate_keyframes_s*.log)"; \
		for p in $$pids; do wait $$p || { echo "a key-frame chain failed: see its log"; exit 1; }; done
	$(BIN)/glus study ablation-table --title "GLUS ablation, synthetic valid_u (seeds $(ABLATE_SEEDS))" --out runs/ablation \
		$(foreach r,query_only context memory contrastive,--row $(ROW_$(r)) \
			$(foreach s,$(ABLATE_SEEDS),runs/ablate_$(r)_s$(s)/latest)) \
		--row $(ROW_first) $(foreach s,$(ABLATE_SEEDS),runs/ablate_keyframes_s$(s)/report/rows/first.json) \
			--versus $(ROW_contrastive) \
		--row $(ROW_keyframes) $(foreach s,$(ABLATE_SEEDS),runs/ablate_keyframes_s$(s)/report/rows/selector.json) \
		--row $(ROW_e2e_memory) $(foreach s,$(ABLATE_SEEDS),runs/ablate_e2e_memory_s$(s)/latest) \
			--versus $(ROW_contrastive)

# Row 5 for seed $(1): pseudo-labels of row 4's export on part of the training videos, a selector trained on them
# from that export (recipes/selector_synthetic.yaml), its key frames on valid_u, and `glus study keyframes-report`, whose
# rows are scored by the streaming engine (the protocol of glus predict, not of the fit's own evaluation): row 5 is
# read against row 4 under that protocol from the first frame (4'), not against row 4. Each step resumes.
ABLATE_KF_FRACTION ?= 0.25
ablate_keyframes = E=runs/ablate_contrastive_s$(1)/latest/export; D=runs/ablate_keyframes_s$(1); \
	export OMP_NUM_THREADS=1; test -f $$D/report/rows/selector.json || { \
	$(BIN)/glus pseudolabel --ckpt $$E --data mevis/train --root $(DATA) --fraction $(ABLATE_KF_FRACTION) --seed 0 \
		--out $$D/labels --quiet && \
	{ test -f runs/ablate_selector_s$(1)/latest/export/recipe.yaml || $(BIN)/glus fit --wandb disabled \
		--config recipes/selector_synthetic.yaml --seed $(1) --name ablate_selector_s$(1) \
		--model.init_args.builder.init_args.init_from $$E --data.init_args.labels $$D/labels; } && \
	$(BIN)/glus keyframes --ckpt runs/ablate_selector_s$(1)/latest/export --data mevis/valid_u --root $(DATA) \
		--out $$D/kf.json --quiet && \
	$(BIN)/glus study keyframes-report --ckpt $$E --keyframes $$D/kf.json --data mevis/valid_u --root $(DATA) \
		--out $$D/report --quiet; }

# Per-frame IoU of a GLUS export's masks on part of a training split: the key-frame selector's labels.
# Sharded with torchrun (each process takes whole videos) and resumable: rerun the same command after a kill.
pseudolabel: install
	$(BIN)/glus pseudolabel --ckpt $(CKPT) --data $(SPLIT) --root $(ROOT) --fraction $(FRACTION) --seed 0 --out $(LABELS)

# Predict a split, then score it (splits with ground truth) or zip it for the benchmark's server.
eval: install
	$(BIN)/glus predict --ckpt $(CKPT) --data $(BENCH) --root $(ROOT) --out $(PRED)
	@if $(BIN)/glus data index --root $(ROOT) --data $(BENCH) | grep -q '"ground_truth": true'; then \
		$(BIN)/glus evaluate --pred $(PRED) --data $(BENCH) --root $(ROOT) --out-json $(PRED)/results.json; \
	else \
		$(BIN)/glus submit --pred $(PRED) --data $(BENCH) --root $(ROOT) --out $(PRED).zip; \
	fi

# Sparse mode on the whole synthetic valid_u, per kind: GLUS (CKPT) on every frame with the streaming engine, then
# on every K-th frame of a pass with the plain VOS export (SPARSE_VOS; the SAM-2 bank's, the VOS path that tracks
# best) in between (runs/sparse/every<K>.json).
SPARSE_K ?= 4 8
SPARSE_VOS ?= runs/vos_synthetic_sam2_bank/latest/export
sparse: install
	$(BIN)/glus predict --ckpt $(CKPT) --data mevis/valid_u --root $(DATA) --out runs/sparse/every1 --quiet
	$(BIN)/glus evaluate --pred runs/sparse/every1 --data mevis/valid_u --root $(DATA) \
		--out-json runs/sparse/every1.json --quiet
	for k in $(SPARSE_K); do \
		$(BIN)/glus predict --ckpt $(CKPT) --data mevis/valid_u --root $(DATA) --mode sparse --every $$k \
			--vos $(SPARSE_VOS) --out runs/sparse/every$$k --quiet && \
		$(BIN)/glus evaluate --pred runs/sparse/every$$k --data mevis/valid_u --root $(DATA) \
			--out-json runs/sparse/every$$k.json --quiet || exit 1; done

# A GLUS export (CKPT) on valid_u with the temporal kinds, its memory on and off: J&F per kind
# (runs/temporal/memory_{on,off}/metrics.json).
temporal: install
	@test "$$(cat $(TEMPORAL)/synth_args 2>/dev/null)" = "$(TEMPORAL_ARGS)" || { rm -rf $(TEMPORAL) && \
		$(BIN)/glus data synth --out $(TEMPORAL) $(TEMPORAL_ARGS) && echo "$(TEMPORAL_ARGS)" > $(TEMPORAL)/synth_args; }
	OMP_NUM_THREADS=1 $(BIN)/glus validate --ckpt $(CKPT) --data mevis/valid_u --root $(TEMPORAL) \
		--out runs/temporal/memory_on
	OMP_NUM_THREADS=1 $(BIN)/glus validate --ckpt $(CKPT) --data mevis/valid_u --root $(TEMPORAL) \
		--out runs/temporal/memory_off --memory-off

# Figures, not tests: engine vs faithful loop speed, peak memory of streaming prediction (runs/bench/bench.json).
bench: install
	$(BIN)/glus tools bench --out runs/bench

# The one prepared GPU check (glus/gpu_check.py): runs/gpu/gpu.json + gpu.md. DRY=1: the same script at the tiny
# shapes on the CPU (runs/gpu-dry). GPU_PY=python3: use that interpreter as it is, without `make install` (a
# GPU machine without package registries: its own CUDA torch, the missing packages carried as wheels).
GPU_PY ?=
gpu-check: $(if $(GPU_PY),,install)
	$(if $(GPU_PY),PYTHONPATH=.:$$PYTHONPATH $(GPU_PY),$(BIN)/python) -m glus tools gpu-check \
		$(if $(filter 1,$(DRY)),--dry --out runs/gpu-dry,--out runs/gpu)

# Wheels (CPython 3.12, x86-64 Linux) of what a GPU image with torch, lightning and the usual scientific stack
# lacks or holds at other versions, pinned as .ci/constraints.txt pins them: .whl/ (git-ignored, ~25 MB), for a
# machine that cannot reach a registry. There: pip install --no-index --no-deps --target /tmp/site .whl/*.whl,
# then PYTHONPATH=/tmp/site make gpu-check GPU_PY=python3 (docs/performance.md).
GPU_WHEELS := annotated-types datasets dill hjson httpcore2 httpx2 huggingface_hub hydra-core multiprocess omegaconf \
	peft pycocotools pydantic pydantic_core tokenizers transformers typing-inspection
GPU_SDISTS := deepspeed antlr4-python3-runtime iopath
gpu-wheels: install
	rm -rf .whl && mkdir -p .whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-c .ci/constraints.txt -d .whl $(GPU_WHEELS)
	DS_BUILD_OPS=0 $(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -c .ci/constraints.txt -w .whl \
		$(GPU_SDISTS)
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w .whl sam2==1.1.0
	@ls .whl && du -sh .whl
