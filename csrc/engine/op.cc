#include "engine/op.h"

namespace dlion {

const char* to_string(OpKind k) {
  switch (k) {
    case OpKind::Allreduce: return "allreduce";
    case OpKind::Broadcast: return "broadcast";
    case OpKind::Allgather: return "allgather";
    case OpKind::Barrier: return "barrier";
  }
  return "unknown-op";
}

const char* to_string(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Byte: return "bytes";
  }
  return "unknown-dtype";
}

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::None: return "none";
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Average: return "average";
  }
  return "unknown-reduce";
}

}  // namespace dlion
