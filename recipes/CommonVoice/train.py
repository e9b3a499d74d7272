#!/usr/bin/env python3
"""Recipe for parameter-efficient fine-tuning of Whisper on one Common Voice language.

Whisper (``openai/whisper-small`` by default) is frozen; the PETL method of the hparams file is
injected into its encoder (MambAdapter, LoRA, bottleneck or Conformer adapters; or full
fine-tuning), and a new language token ``<|xx|>`` is added whose embedding row trains with it.
The data are the CL-MASR subsets of a Common Voice release (600/60/60 minutes). Dev is decoded
greedily every epoch, test with beam search from the checkpoint of lowest dev WER. Run::

    python train.py hparams/mambadapter.yaml --language=ab --data_folder=<cv-corpus>/ab

Other methods: ``hparams/{lora,bottleneck,conformer,full_finetuning}.yaml``. Flags override any
top-level key, e.g. ``--seed=2``, ``--whisper_source=<local Whisper folder>``,
``--precision=fp32`` (on CPU). See README.md for the protocol and the outputs.

Several GPUs (DistributedDataParallel; dev and test are sharded too, their WER merged)::

    torchrun --nproc_per_node=2 train.py hparams/mambadapter.yaml --language=ab --data_folder=...

``--batch_size`` is per GPU; ``--step_log=<file>`` writes one JSON line per training batch.
``--inference_mode=cuda_graph`` replays Whisper's encoder as CUDA graphs on dev and test (GPU).
``--train_mode=cuda_graph`` replays the encoder's forward and backward as CUDA graphs in training
(GPU; captured at the first batch, batches of another size such as an epoch's last run eagerly;
composes with ``--precision=bf16``); the decoder, loss and optimiser stay eager.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import functools
import sys
from pathlib import Path

import speechbrain as sb
import torch
from common_voice_prepare import (
    check_common_voice_folder,
    normalize_text,
    preparation_arguments,
    prepare_common_voice,
)
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from speechbrain_mambadapter import compat
from speechbrain_mambadapter.recipe import asr, distributed
from speechbrain_mambadapter.recipe.brain import PETLBrain
from speechbrain_mambadapter.recipe.dataprep import load_mono
from speechbrain_mambadapter.recipe.hparams import check_hparams, peek_hparams

# The keys __main__ and dataio_prepare read (the Brain's own are ASR.HPARAMS).
DATA_HPARAMS = (
    "data_folder",
    "prepared_folder",
    "train_minutes",
    "dev_minutes",
    "test_minutes",
    "data_seed",
    "max_duration",
    "max_skipped_fraction",
    "skip_prep",
    "sample_rate",
    "whisper",
    "modules",
    "opt_class",
    "checkpointer",
    "train_dataloader_opts",
    "valid_dataloader_opts",
    "test_dataloader_opts",
)


class ASR(PETLBrain):
    """Whisper trained with teacher forcing; dev/test transcribed in ``--language``."""

    HPARAMS = PETLBrain.HPARAMS + (
        "language",
        "language_token_id",
        "log_softmax",
        "nll_loss",
        "valid_search",
        "test_search",
        "error_rate_computer",
        "cer_computer",
        "epoch_counter",
        "train_logger",
        "test_wer_file",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The encoder of dev and test decoding, and of training, through CUDA graphs (the
        # decoder stays eager).
        self.use_graph_modes(self.modules.whisper)

    def compute_forward(self, batch, stage):
        """Encoder and teacher-forced decoder; hypotheses on dev and test."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        tokens_bos, _ = batch.tokens_bos
        enc_out, logits, _ = self.modules.whisper(wavs, tokens_bos)
        log_probs = self.hparams.log_softmax(logits)
        hyps = None
        if stage != sb.Stage.TRAIN:
            searcher = self.hparams.valid_search if stage == sb.Stage.VALID else self.hparams.test_search
            hyps = asr.transcribe(searcher, enc_out.detach(), wav_lens, self.hparams.language_token_id)
        return log_probs, hyps

    def compute_objectives(self, predictions, batch, stage):
        """NLL of the prompt's continuation and the transcript; WER and CER on dev and test."""
        log_probs, hyps = predictions
        tokens_eos, tokens_eos_lens = batch.tokens_eos
        loss = self.hparams.nll_loss(log_probs, tokens_eos, length=tokens_eos_lens)
        if stage != sb.Stage.TRAIN:
            # The references went through the same function at preparation (it is idempotent).
            normalize = functools.partial(normalize_text, language=self.hparams.language)
            texts = self.tokenizer.batch_decode(hyps, skip_special_tokens=True)
            predicted = asr.words(texts, normalize)
            target = asr.words(batch.wrd, normalize)
            self.wer_metric.append(batch.id, predicted, target)
            self.cer_metric.append(batch.id, predicted, target)
        return loss

    def on_fit_start(self):
        """Build the schedule and recover (``PETLBrain``), then log what trains."""
        super().on_fit_start()
        asr.trainable_parameter_summary(distributed.unwrap(self.modules.whisper))

    def on_stage_start(self, stage, epoch=None):
        """Fresh error-rate statistics for dev and test."""
        super().on_stage_start(stage, epoch)
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.error_rate_computer()
            self.cer_metric = self.hparams.cer_computer()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the epoch, keeps the checkpoint of lowest dev WER, writes wer_test.txt."""
        # Under DDP: the loss averaged over the ranks, the error rates of every rank's utterances.
        stage_stats = {"loss": distributed.mean_over_ranks(stage_loss, self.device)}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stage_stats
            return
        for metric in (self.wer_metric, self.cer_metric):
            metric.scores = distributed.gather_records(metric.scores, key=lambda score: score["key"])
        stage_stats["WER"] = self.wer_metric.summarize("error_rate")
        stage_stats["CER"] = self.cer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                train_stats=self.train_stats,
                valid_stats=stage_stats,
            )
            self.checkpointer.save_and_keep_only(meta={"WER": stage_stats["WER"]}, min_keys=["WER"])
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stage_stats,
            )
            if if_main_process():
                with open(self.hparams.test_wer_file, "w", encoding="utf-8") as w:
                    self.wer_metric.write_stats(w)


def dataio_prepare(hparams, tokenizer):
    """Datasets of the prepared CSVs, with 16 kHz audio and the prompted token sequences."""
    prompt = asr.decoder_prompt(tokenizer, hparams["language_token_id"])
    max_tokens = hparams["whisper"].model.config.max_target_positions
    datasets = {}
    for split in ("train", "dev", "test"):
        datasets[split] = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=f"{hparams['prepared_folder']}/{split}.csv"
        )
    # Whisper pads every input to 30 s; sorting by duration makes the transcripts of a dev or test
    # batch of similar length, so its decoding steps are not spent on hypotheses that have ended.
    datasets["dev"] = datasets["dev"].filtered_sorted(sort_key="duration")
    datasets["test"] = datasets["test"].filtered_sorted(sort_key="duration")

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return load_mono(wav, hparams["sample_rate"])

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens_bos", "tokens_eos")
    def text_pipeline(wrd):
        yield wrd
        tokens = asr.transcript_tokens(tokenizer, prompt, wrd, max_tokens)
        yield torch.LongTensor(tokens[:-1])
        yield torch.LongTensor(tokens[1:])

    datasets = list(datasets.values())
    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens_bos", "tokens_eos"])
    return datasets


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    compat.quiet_speechbrain_whisper_deprecations()
    # The inputs first: a missing flag or a wrong data folder fails here, before Whisper loads.
    data = peek_hparams(hparams_file, overrides, ["data_folder", "language", "skip_prep"])
    if not data["skip_prep"]:
        check_common_voice_folder(Path(data["data_folder"]).resolve(), data["language"])
    # Under torchrun: join the process group (a no-op for a plain `python train.py`).
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    check_hparams(hparams, ASR.HPARAMS + DATA_HPARAMS, hparams_file)

    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    run_on_main(prepare_common_voice, kwargs=preparation_arguments(hparams))

    tokenizer = hparams["whisper"].tokenizer
    train_data, valid_data, test_data = dataio_prepare(hparams, tokenizer)

    asr_brain = ASR(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    asr_brain.tokenizer = tokenizer

    asr_brain.fit(
        asr_brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )

    asr_brain.evaluate(test_data, min_key="WER", test_loader_kwargs=hparams["test_dataloader_opts"])
    distributed.shutdown_process_group(asr_brain)  # under torchrun (a no-op otherwise)
