"""The LiteRT GPU delegate's rules, as far as a .tflite flatbuffer alone can be checked against them.

Read from the sources of the pinned ai-edge-litert 2.3.0: google-ai-edge/LiteRT at 19a1585ff7c6
("Bump LiteRT SDK versions to 2.3.0"; these files are unchanged at LiteRT HEAD f67457790c9c). Its
tflite/ tree is TensorFlow Lite's code moved out of tensorflow/tensorflow (tflite/version.h there
still says TF 2.19.0):
  tflite/delegates/gpu/common/model_builder.cc
      NewOperationParser: the builtin ops the delegate has a parser for (anything else -> the
          UnsupportedOperationParser, "Operation is not supported.");
      each parser's IsSupported: CheckMaxSupportedOpVersion(registration, N), the highest op version
          it takes (ElementwiseOperationParser: MUL 3, every other elementwise op 2);
      GetOpsToReplace / IsAllAllowedTensors: every tensor of a node has rank < 5; every non-constant
          tensor is float32/float16, or int8/uint8 when quantized models are allowed (the default:
          delegate_options.cc sets TFLITE_GPU_EXPERIMENTAL_FLAGS_ENABLE_QUANT), plus the per-op
          extras below; constant tensors are not type-checked.
  tflite/tools/versioning/gpu_compatibility.cc, CheckGpuDelegateCompatibility: the per-op
      conditions; the ones kept here are the runtime-input counts (CheckInputsOutputs /
      CheckInputsConstsOutputs), e.g. RESHAPE takes exactly 1 runtime input, so a RESHAPE whose new
      shape is computed at run time (Flatten over a dynamic batch: SHAPE -> STRIDED_SLICE -> PACK ->
      RESHAPE) is refused ("Expected 1 runtime input tensor(s), but node has 2 runtime input(s).").
  tflite/core/subgraph.cc, ModifyGraphWithDelegate: the GPU delegate does not set
      kTfLiteDelegateFlagsAllowDynamicTensors, so a graph with a dynamic-sized tensor is refused
      whole ("Attempting to use a delegate that only supports static-sized tensors ...").
  tflite/delegates/utils.h, FP16GraphPartitionHelper: a DEQUANTIZE of a constant float16 tensor
      (fp16 weights) is folded away, its output counts as that constant.
The docs' op list (tflite/g3doc/performance/gpu.md "GPU ML operations support", "all ops are only
supported at version 1") is older than the code and is not used.

Not checked here (they need option values or shape arithmetic, or are MediaPipe-only): strides,
dilations, activations, STRIDED_SLICE masks, SOFTMAX beta, broadcast shapes, the logical-op
producer/consumer patterns, and the four custom ops the delegate has parsers for
(Convolution2DTransposeBias, MaxPoolingWithArgmax2D, MaxUnpooling2D, Resampler), which the stock
LiteRT runtime has no kernels for: every custom op, Flex ops included, is refused.
"""
SOURCE = "LiteRT 2.3.0"
SOURCE_COMMIT = "google-ai-edge/LiteRT@19a1585ff7c6"

# Builtin op -> highest version the delegate takes; None: the parser checks no version.
MAX_VERSION = {
    "ABS": 2, "ADD": 2, "ADD_N": 2, "AVERAGE_POOL_2D": 2, "BATCH_MATMUL": None, "CAST": None,
    "CONCATENATION": 2, "CONV_2D": 6, "COS": 2, "CUMSUM": 1, "DENSIFY": 1, "DEPTHWISE_CONV_2D": 6,
    "DEPTH_TO_SPACE": None, "DEQUANTIZE": 3, "DIV": 2, "ELU": 2, "EQUAL": 2, "EXP": 2, "FLOOR": 2,
    "FLOOR_DIV": 2, "FLOOR_MOD": 2, "FULLY_CONNECTED": 9, "GATHER": 1, "GELU": 2, "GREATER": 2,
    "GREATER_EQUAL": 2, "HARD_SWISH": None, "LEAKY_RELU": 2, "LESS": 2, "LESS_EQUAL": 2, "LOG": 2,
    "LOGICAL_AND": 2, "LOGISTIC": 2, "LSTM": 4, "MAXIMUM": 2, "MAX_POOL_2D": 2, "MEAN": None,
    "MINIMUM": 2, "MIRROR_PAD": 2, "MUL": 3, "NEG": 2, "NOT_EQUAL": 2, "ONE_HOT": 1, "PACK": None,
    "PAD": 2, "PADV2": 2, "POW": 2, "PRELU": 1, "QUANTIZE": 2, "REDUCE_MAX": None, "REDUCE_MIN": None,
    "REDUCE_PROD": None, "RELU": 2, "RELU6": 2, "RELU_0_TO_1": 2, "RELU_N1_TO_1": 2, "RESHAPE": 1,
    "RESIZE_BILINEAR": 3, "RESIZE_NEAREST_NEIGHBOR": 3, "RSQRT": 2, "SELECT": 1, "SELECT_V2": 1,
    "SIGN": 2, "SIN": 2, "SLICE": 2, "SOFTMAX": 2, "SPACE_TO_DEPTH": 2, "SPLIT": None, "SPLIT_V": None,
    "SQRT": 2, "SQUARE": 2, "SQUARED_DIFFERENCE": 2, "STRIDED_SLICE": 4, "SUB": 2, "SUM": None,
    "TANH": 2, "TILE": None, "TRANSPOSE": 4, "TRANSPOSE_CONV": 3, "UNPACK": None,
}

MAX_RANK = 4  # IsAllAllowedTensors: dims->size >= 5 refused, constants included

# Types of non-constant tensors (IsAllAllowedTensors), by TensorType name.
RUNTIME_TYPES = frozenset({"FLOAT32", "FLOAT16", "INT8", "UINT8"})
_LOGICAL = ("EQUAL", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "NOT_EQUAL")  # IsLogicalCode
EXTRA_INPUT_TYPES = {"CAST": {"BOOL", "INT32"}, "ONE_HOT": {"INT32"}, "SELECT": {"BOOL"}, "SELECT_V2": {"BOOL"},
                     "LOGICAL_AND": {"BOOL"}, "GATHER": {"INT32"}}
EXTRA_OUTPUT_TYPES = {"CAST": {"BOOL", "INT32"}, "LOGICAL_AND": {"BOOL"}, **{op: {"BOOL"} for op in _LOGICAL}}

# Ops gpu_compatibility.cc requires exactly this many runtime (non-constant, non-optional) inputs of.
RUNTIME_INPUTS = {
    **{op: 1 for op in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CAST", "DEPTH_TO_SPACE", "HARD_SWISH", "MEAN",
                        "QUANTIZE", "RESHAPE", "SPACE_TO_DEPTH", "TILE", "TRANSPOSE", "RESIZE_BILINEAR",
                        "RESIZE_NEAREST_NEIGHBOR", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "SUM", "PAD",
                        "PADV2", "MIRROR_PAD")},
    # one-argument elementwise ops: 1 runtime input, no constant
    **{op: 1 for op in ("ABS", "COS", "ELU", "EXP", "FLOOR", "GELU", "LOG", "LOGISTIC", "NEG", "RSQRT", "SIGN",
                        "SIN", "SQRT", "SQUARE", "TANH")},
}

# Refused with a reason of their own (they are absent from MAX_VERSION anyway).
RUNTIME_SHAPE_OPS = {"SHAPE": "computes a shape at run time; the delegate needs static shapes"}
