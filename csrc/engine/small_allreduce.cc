#include "engine/small_allreduce.h"

#include <cstring>

#include "common/error.h"
#include "compress/reduce.h"
#include "engine/mpi_check.h"

namespace dlion {

namespace {

// The block: this header, then `cap` payload bytes (the same cap on every rank).
struct BlockHeader {
  std::uint32_t dtype;  // DType of the payload (0 in an empty block)
  std::uint32_t valid;  // 1: carries a payload; 0: empty, or the headers disagreed
  std::uint64_t count;  // elements of the payload
  std::uint64_t cap;    // payload bytes of the block
};
static_assert(sizeof(BlockHeader) % 8 == 0, "the payload must stay 8-byte aligned");

template <class T>
void add(unsigned char* dst, const unsigned char* src, std::uint64_t n) {
  // The payloads start 8-byte aligned in the blocks (MPI's buffers and ours).
  add_inplace(reinterpret_cast<T*>(dst), reinterpret_cast<const T*>(src),
              static_cast<std::size_t>(n));
}

// The MPI_Op: inout := in + inout where both headers say the same thing; else inout becomes
// invalid. Trusts no header: the block's size comes from the datatype.
void combine(void* in, void* inout, int* len, MPI_Datatype* type) {
  auto* a = static_cast<unsigned char*>(in);
  auto* b = static_cast<unsigned char*>(inout);
  int bytes = 0;
  MPI_Type_size(*type, &bytes);
  const std::size_t stride = static_cast<std::size_t>(bytes);
  if (stride < sizeof(BlockHeader)) return;  // not a block (cannot happen: ours is)
  for (int i = 0; i < *len; ++i, a += stride, b += stride) {
    BlockHeader x, y;
    std::memcpy(&x, a, sizeof x);
    std::memcpy(&y, b, sizeof y);
    const auto t = static_cast<DType>(y.dtype);
    const bool ok = x.valid == 1 && y.valid == 1 && x.dtype == y.dtype && x.count == y.count &&
                    x.cap == y.cap && y.cap == stride - sizeof y &&
                    (t == DType::Float32 || t == DType::Float64) &&
                    y.count <= y.cap / dtype_size(t);
    if (ok && t == DType::Float32) add<float>(b + sizeof y, a + sizeof x, y.count);
    if (ok && t == DType::Float64) add<double>(b + sizeof y, a + sizeof x, y.count);
    if (!ok) {
      y.valid = 0;
      std::memcpy(b, &y, sizeof y);
    }
  }
}

}  // namespace

SmallBlocks::SmallBlocks(std::size_t max_bytes) : size_(max_bytes) {
  DLION_MPI(MPI_Op_create(&combine, 1, &op_));
}

SmallBlocks::~SmallBlocks() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  // MPI keeps what pending operations still use (MPI_Type_free, MPI_Op_free).
  if (type_ != MPI_DATATYPE_NULL) MPI_Type_free(&type_);
  if (op_ != MPI_OP_NULL) MPI_Op_free(&op_);
}

void SmallBlocks::ensure_type() {
  const std::size_t cap = size_.cap();
  if (type_ != MPI_DATATYPE_NULL && type_cap_ == cap) return;
  if (type_ != MPI_DATATYPE_NULL) DLION_MPI(MPI_Type_free(&type_));
  DLION_MPI(MPI_Type_contiguous(static_cast<int>(sizeof(BlockHeader) + cap), MPI_BYTE, &type_));
  DLION_MPI(MPI_Type_commit(&type_));
  type_cap_ = cap;
  // Only ever grown: a block that failed may still be written by MPI (the engine is then
  // poisoned and posts no more).
  if (in_.size() < sizeof(BlockHeader) + cap) {
    in_.resize(sizeof(BlockHeader) + cap);
    out_.resize(sizeof(BlockHeader) + cap);
  }
}

std::unique_ptr<SmallAllreduce> SmallBlocks::post(MPI_Comm comm, const OpRequest* req,
                                                  const OpMeta& meta) {
  ensure_type();
  BlockHeader h{};
  h.cap = type_cap_;
  if (req) {
    const std::size_t bytes = req->count * dtype_size(req->dtype);
    h.dtype = static_cast<std::uint32_t>(req->dtype);
    h.valid = 1;
    h.count = req->count;
    std::memcpy(in_.data() + sizeof h, req->data, bytes);
  }
  std::memcpy(in_.data(), &h, sizeof h);
  auto s = std::make_unique<SmallAllreduce>(
      (req ? "MPI_Iallreduce of the block of " : "MPI_Iallreduce of an empty block beside ") +
          describe(meta),
      out_.data());
  DLION_MPI(MPI_Iallreduce(in_.data(), out_.data(), 1, type_, op_, comm, &s->req_));
  return s;
}

SmallAllreduce::SmallAllreduce(std::string what, unsigned char* out)
    : what_(std::move(what)), out_(out) {}

bool SmallAllreduce::poll(bool& progressed) {
  if (done_) return true;
  int flag = 0;
  DLION_MPI(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE));
  if (!flag) return false;
  progressed = true;
  done_ = true;
  return true;
}

std::string SmallAllreduce::waiting_on() const {
  return "the other ranks to complete " + what_;
}

bool SmallAllreduce::abandon() {
  // A collective cannot be cancelled; MPI may still write the engine's block, never the
  // caller's buffer.
  return false;
}

void SmallAllreduce::finish(const OpRequest& req, int size) const {
  BlockHeader h;
  std::memcpy(&h, out_, sizeof h);
  DLION_CHECK(done_ && h.valid == 1 && h.count == req.count &&
                  h.dtype == static_cast<std::uint32_t>(req.dtype),
              ProtocolError, "'", req.name, "': the ranks agreed on the operation but its "
              "fused block came back ", h.valid ? "for another operation" : "invalid",
              " (an internal error of dlion's small-allreduce path)");
  std::memcpy(req.data, out_ + sizeof h, req.count * dtype_size(req.dtype));
  if (req.reduce != ReduceOp::Average) return;
  if (req.dtype == DType::Float32)
    scale_inplace(static_cast<float*>(req.data), req.count, 1.0 / size);
  else
    scale_inplace(static_cast<double*>(req.data), req.count, 1.0 / size);
}

}  // namespace dlion
