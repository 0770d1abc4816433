// What a caller can submit to the engine: one struct per operation, checked before dispatch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace dlion {

enum class OpKind : std::uint32_t { Allreduce = 1, Broadcast = 2, Allgather = 3, Barrier = 4 };
enum class DType : std::uint32_t { Float32 = 1, Float64 = 2, Byte = 3 };
enum class ReduceOp : std::uint32_t { None = 0, Sum = 1, Average = 2 };

inline std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::Float32: return 4;
    case DType::Float64: return 8;
    case DType::Byte: return 1;
  }
  return 0;
}

const char* to_string(OpKind k);
const char* to_string(DType t);
const char* to_string(ReduceOp op);

struct OpRequest {
  OpKind kind = OpKind::Barrier;
  DType dtype = DType::Byte;
  ReduceOp reduce = ReduceOp::None;
  void* data = nullptr;       // the caller's buffer (in place); for Allgather, the input
  std::size_t count = 0;      // elements in data
  int root = 0;               // Broadcast only
  std::string name;           // names the operation in errors and stall warnings
  std::uint64_t signature = 0;  // caller-defined hash of the layout (e.g. fused tensor shapes)
  // What the caller passed, in words (e.g. "int32[4]"): shown in mismatch errors, and for
  // allreduce and broadcast compared across ranks (so int32[4] and int64[2], both 16 bytes,
  // do not pass as the same broadcast). At most kLayoutChars characters are negotiated.
  std::string layout;
};

constexpr std::size_t kLayoutChars = 47;

}  // namespace dlion
