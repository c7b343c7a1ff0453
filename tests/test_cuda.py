"""The CUDA path, on a real GPU: logits against the CPU's, training that tracks the CPU's, resume
after a kill, predict, one served request, evaluate against the run's metrics.json, and torchrun
with NCCL. Marked `cuda` and skipped where no GPU is; `benchmarks/gpu.sh` runs them on one.

Tolerances: float32 on CUDA against float32 on the CPU within 1e-4 (TF32 is off for float32
matrix products by default in PyTorch, and we leave it off). Under bfloat16 autocast, whose inputs
to every matrix product keep 8 bits of mantissa, the logits of 12- and 30-layer models with
GPT-2's initialisation stay within BF16_TOLERANCE of the float32 logits' scale, and the predicted
class of each text is the float32 one wherever float32's margin is above that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from conftest import SHARED_DATA, sms_texts

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]

BF16_TOLERANCE = 0.05  # max |logit difference| / max |float32 logit| under bf16 autocast


def gpt2_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """GPT-2's initialisation (normal, std 0.02; zero biases; unit norms): logits of a realistic scale."""
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, std=0.02)
        elif name.endswith(("scale", "norm1.weight", "norm2.weight", "final_norm.weight")):
            nn.init.ones_(p)
        else:
            nn.init.zeros_(p)
    return model.eval()


def models():
    from gptclassify.models.gpt2 import GPTModel, gpt2_config
    from gptclassify.models.llama import LlamaModel, llama_config

    return {"gpt2-124m": lambda: GPTModel(gpt2_config("gpt2")),
            "smollm2-135m": lambda: LlamaModel(llama_config("smollm2-135m", vocab_size=50257))}


def sms_batch(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Real messages in GPT-2's tokens, right-padded, and their lengths."""
    from gptclassify import get_tokenizer

    tok = get_tokenizer("gpt2")
    encoded = [tok.encode(t)[:96] for t in sms_texts()[:n]]
    width = max(map(len, encoded))
    ids = torch.full((n, width), tok.pad_id)
    for r, e in enumerate(encoded):
        ids[r, : len(e)] = torch.tensor(e)
    return ids, torch.tensor([len(e) for e in encoded])


@pytest.mark.parametrize("name", ["gpt2-124m", "smollm2-135m"])
def test_logits_on_cuda_match_the_cpu(name):
    model = gpt2_init(models()[name]())
    ids, lengths = sms_batch()
    real = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    with torch.no_grad():
        cpu = model(ids)[real]
        model.cuda()
        fp32 = model(ids.cuda())[real].cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model(ids.cuda())[real].float().cpu()
    scale = cpu.abs().max().item()
    assert (fp32 - cpu).abs().max().item() < 1e-4 * max(1.0, scale)
    assert (bf16 - cpu).abs().max().item() < BF16_TOLERANCE * scale
    top2 = cpu.topk(2, dim=-1).values
    sure = (top2[:, 0] - top2[:, 1]) > BF16_TOLERANCE * scale
    assert torch.equal(bf16.argmax(-1)[sure], cpu.argmax(-1)[sure])


# ---------------------------------------------------------------- the commands on CUDA

def gptclassify(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptclassify", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "GPTCLASSIFY_GPT2_BPE_DIR": str(SHARED_DATA / "gpt2"), **(env or {})},
                          timeout=timeout)


TRAIN = ["--epochs", "3", "--checkpoint-every", "6", "--lr-schedule", "cosine", "--warmup-steps", "4", "--eval-freq", "5"]


def train(data_dir, weights, run, *extra, env=None) -> subprocess.CompletedProcess:
    return gptclassify("train", "--data", data_dir, "--weights", weights, "--out", run, *TRAIN, *extra, env=env)


def read(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


@pytest.fixture(scope="module")
def plain_weights(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide GPT-2 without dropout (as SmolLM2 and most decoders): the feature cache is used."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    out = tmp_path_factory.mktemp("weights") / "gpt2-plain"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def cuda_run(data_dir, plain_weights, tmp_path_factory):
    """The default recipe on CUDA: the frozen pass in bfloat16 into the feature cache, autocast."""
    run = tmp_path_factory.mktemp("cuda") / "run"
    done = train(data_dir, plain_weights, run, "--device", "cuda")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "frozen pass" in done.stdout and "feature cache: kept on the GPU" in done.stdout, done.stdout
    return run


def test_training_on_cuda_tracks_the_cpu(data_dir, plain_weights, cuda_run, tmp_path):
    cpu = tmp_path / "cpu"
    done = train(data_dir, plain_weights, cpu, "--device", "cpu", "--prefix-dtype", "float32")
    assert done.returncode == 0, done.stderr[-3000:]
    assert read(cuda_run, "config.json")["prefix_dtype"] == "bfloat16"
    on_gpu, on_cpu = read(cuda_run, "history.json")["step_loss"], read(cpu, "history.json")["step_loss"]
    assert len(on_gpu) == len(on_cpu) > 20
    assert max(abs(a - b) for a, b in zip(on_gpu, on_cpu)) < 0.02, (on_gpu, on_cpu)
    gpu_acc, cpu_acc = (read(r, "metrics.json")["test"]["accuracy"] for r in (cuda_run, cpu))
    assert abs(gpu_acc - cpu_acc) <= 2 / 30  # two of the 30 test messages at most


def test_llama_training_on_cuda_tracks_the_cpu(data_dir, tmp_path):
    """A tiny Llama (GQA, RoPE, SwiGLU) through the default recipe on CUDA: the one-query last block
    under bf16 autocast, against float32 on the CPU."""
    from test_distributed import small_llama_dir

    weights = small_llama_dir(tmp_path)
    runs = {}
    for device, extra in (("cuda", []), ("cpu", ["--prefix-dtype", "float32"])):
        runs[device] = tmp_path / device
        done = train(data_dir, weights, runs[device], "--device", device, *extra)
        assert done.returncode == 0, done.stderr[-3000:]
    on_gpu, on_cpu = (read(runs[d], "history.json")["step_loss"] for d in ("cuda", "cpu"))
    assert len(on_gpu) == len(on_cpu) > 20
    assert max(abs(a - b) for a, b in zip(on_gpu, on_cpu)) < 0.02, (on_gpu, on_cpu)


def test_a_run_killed_mid_epoch_on_cuda_resumes_to_the_same_end(data_dir, plain_weights, tmp_path):
    """With dropout live (LoRA's, drawn from the GPU's RNG), a run killed at step 20 (mid-epoch 2, two
    steps after a checkpoint) and resumed ends where an unbroken one ends."""
    straight, run = tmp_path / "straight", tmp_path / "run"
    lora = ["--device", "cuda", "--trainable", "lora", "--lora-rank", "4", "--lora-dropout", "0.1"]
    done = train(data_dir, plain_weights, straight, *lora)
    assert done.returncode == 0, done.stderr[-2000:]
    done = train(data_dir, plain_weights, run, *lora, env={"GPTCLASSIFY_FAILPOINT": "step:20"})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    resumed = gptclassify("train", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = read(straight, "history.json")["step_loss"], read(run, "history.json")["step_loss"]
    assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (a, b)
    assert read(straight, "metrics.json")["test"]["confusion_matrix"] == read(run, "metrics.json")["test"]["confusion_matrix"]


def test_evaluate_on_cuda_gives_the_runs_metrics(data_dir, cuda_run):
    done = gptclassify("evaluate", cuda_run, "--data", data_dir)  # --device auto: the GPU
    assert done.returncode == 0, done.stderr[-2000:]
    evaluated, trained = json.loads(done.stdout), read(cuda_run, "metrics.json")["test"]
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]
    assert abs(evaluated["loss"] - trained["loss"]) < 1e-4


def test_predict_and_serve_on_cuda_agree_with_the_cpu(cuda_run, tmp_path):
    from gptclassify.inference.predict import Classifier
    from test_serve import free_port, request

    texts = sms_texts()[:200]
    on_gpu, on_cpu = Classifier.load(cuda_run, "cuda"), Classifier.load(cuda_run, "cpu")
    assert on_gpu.device.type == "cuda"
    gpu, cpu = on_gpu.probabilities(texts), on_cpu.probabilities(texts)
    assert (gpu - cpu).abs().max().item() < 0.02  # bf16 on both; different kernels
    done = gptclassify("predict", cuda_run, *texts[:3], "--format", "jsonl")
    assert done.returncode == 0, done.stderr[-2000:]
    assert [json.loads(line)["label"] for line in done.stdout.splitlines()] == \
        [p["label"] for p in on_gpu.predict(texts[:3])]

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gptclassify.cli", "serve", str(cuda_run), "--port", str(port),
                               "--device", "cuda"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            try:
                status, body = request(f"http://127.0.0.1:{port}/v1/classify", {"texts": texts[:5]})
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(server.stderr.read()[-2000:])
                import time
                time.sleep(0.1)
        assert status == 200, body
        served = json.loads(body)["predictions"]
        expected = on_gpu.predict(texts[:5])
        assert [p["label"] for p in served] == [p["label"] for p in expected]
        assert max(abs(p["score"] - e["score"]) for p, e in zip(served, expected)) < 1e-3
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_torchrun_with_nccl_on_one_gpu(data_dir, plain_weights, cuda_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "gptclassify",
           "train", "--data", str(data_dir), "--weights", str(plain_weights), "--out", str(run), *TRAIN]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "GPTCLASSIFY_GPT2_BPE_DIR": str(SHARED_DATA / "gpt2")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data parallel: 1 process (nccl)" in done.stdout + done.stderr, done.stdout[-2000:]
    a, b = read(cuda_run, "history.json")["step_loss"], read(run, "history.json")["step_loss"]
    assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) < 1e-5
