"""``BackendConfig``: which inference backend runs the segmentation model, and how.

The ``[backend]`` section of the edge configuration. ``name = "auto"`` tries TensorRT,
then ONNX Runtime on the GPU (CUDA provider), then ONNX Runtime on the CPU, and logs the
reason for every skip; a named backend that cannot load is a start-up error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BackendName = Literal["auto", "onnxruntime", "tensorrt"]

class BackendConfig(BaseModel):
    """Inference backend settings (``[backend]``)."""

    model_config = ConfigDict(extra="forbid")

    name: BackendName = Field(
        "auto",
        description="'auto' (tensorrt -> onnxruntime-gpu -> onnxruntime-cpu), 'onnxruntime' "
                    "or 'tensorrt'; a named backend that cannot load is a start-up error")
    threads: int = Field(
        0, ge=0,
        description="CPU threads for ONNX Runtime's intra-op pool; 0 = ONNX Runtime's "
                    "default (one per physical core)")
    precision: Literal["fp16", "fp32", "int8"] = Field(
        "fp16",
        description="TensorRT engine precision (fp16 allows FP16 kernels); ONNX Runtime "
                    "runs the ONNX as stored. 'int8' runs the model's INT8 sibling "
                    "<stem>.int8.onnx (crystal-train export --int8) on every backend "
                    "(TensorRT: INT8 + FP16 kernels); without that file, on a TensorRT "
                    "without fast INT8, or for a file with full-range weights on an x86 "
                    "CPU without VNNI (its kernels overflow), the float model runs and one "
                    "warning says why")
    int8_kernels: Literal["native", "reference"] = Field(
        "native",
        description="how ONNX Runtime's CPU runs an INT8 file: 'native' fuses each "
                    "quantize/dequantize pair into integer kernels (the fast path the "
                    "appliance uses); 'reference' runs the quantize and dequantize steps "
                    "with float arithmetic between them (no fusion), the numbers every "
                    "correct INT8 kernel gives, on any CPU including one without VNNI, at "
                    "about float speed: for measuring an INT8 file (crystal-train evaluate "
                    "and the export's agreement gate use it)")
    onnxruntime_device: Literal["auto", "cpu", "cuda", "tensorrt"] = Field(
        "auto",
        description="execution provider for backend 'onnxruntime': 'cpu', 'cuda' "
                    "(CUDAExecutionProvider), 'tensorrt' (TensorrtExecutionProvider), or "
                    "'auto' (CUDA when the installed onnxruntime has it, else CPU)")
    workspace_mb: int = Field(
        1024, ge=16,
        description="TensorRT builder workspace limit in MiB (set_memory_pool_limit)")
    max_batch: int = Field(
        4, ge=1, le=64,
        description="most frames per inference call; the TensorRT optimisation profile "
                    "covers batch 1..max_batch")
    input_height: int | None = Field(
        None, ge=16,
        description="network input height in pixels (after inference_scale, before "
                    "padding); None = derived from the first frame's size and "
                    "inference_scale")
    input_width: int | None = Field(
        None, ge=16,
        description="network input width in pixels; None = derived like input_height")
    engine_cache_dir: Path | None = Field(
        None,
        description="where serialised TensorRT engines are kept; None = "
                    "<state dir>/engines")
    engine_cache_keep: int = Field(
        3, ge=1, le=20,
        description="TensorRT engines kept per model in the cache (one per input size, "
                    "precision, batch or ONNX file); the least recently used beyond this "
                    "are removed, so a source that alternates between a few frame sizes "
                    "never rebuilds (a build takes 15-20 min on an Orin Nano)")
    warmup_runs: int = Field(
        1, ge=0, le=20,
        description="inferences run inside load() before the first frame")

    def resolved_engine_cache_dir(self, state_dir: str | Path | None = None) -> Path:
        """Engine cache directory: ``engine_cache_dir`` or ``<state_dir>/engines``."""
        if self.engine_cache_dir is not None:
            return Path(self.engine_cache_dir).expanduser()
        if state_dir is not None:
            base = Path(state_dir)
        else:
            from edge.service.state import resolve_state_dir

            base = resolve_state_dir()
        return base / "engines"
