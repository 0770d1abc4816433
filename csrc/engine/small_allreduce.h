// SmallAllreduce: the data of a small allreduce, moved in the same round as its negotiation.
//
// Without it, every operation is two MPI rounds: the negotiation (negotiate.h), then the data.
// For an allreduce of at most BlockSize::cap() bytes the progress thread instead posts, next to
// the negotiation's messages, one MPI_Iallreduce of a fixed-size block: a header (dtype, count,
// block size, valid) and the payload, padded to the block size, summed by a user-defined
// MPI_Op that adds the payloads only where the headers agree (and else marks the block
// invalid). Protocol, per operation:
//   1. every rank whose own operation fits (BlockSize::fits, the same block size everywhere)
//      posts its block next to the negotiation; both run together (one round's latency);
//   2. when the negotiation is complete, every rank knows from the metas which ranks posted a
//      block. When some did but this one did not (a mismatch: another kind, a larger count),
//      it joins with an empty block (valid = 0), so that every rank took part in the same
//      collective and none is left in it;
//   3. every rank learns the next block size from the same metas (BlockSize::learn);
//   4. the negotiation is validated as always: a mismatch fails with MismatchError, naming the
//      ranks, and the block is dropped; the caller's buffer was never handed to MPI;
//   5. else the summed payload is copied into the caller's buffer (average: scaled by 1/p).
// Blocks of one size on every rank and an MPI_Op that never trusts the other ranks' headers
// mean that a mismatched count or dtype cannot make MPI fail, read or write out of bounds.
// Like today's small MPI allreduce, the block is not paced on emulated links (engine.h).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/algorithm.h"
#include "engine/block_size.h"
#include "engine/negotiate.h"
#include "engine/op.h"

namespace dlion {

class SmallAllreduce;

// The engine's part of the fused path (progress thread only): the block size state, the MPI
// datatype of one block and the MPI_Op that combines two, and the two block buffers (which
// outlive any operation that may still use them).
class SmallBlocks {
 public:
  explicit SmallBlocks(std::size_t max_bytes);  // BlockSize's
  ~SmallBlocks();
  SmallBlocks(const SmallBlocks&) = delete;
  SmallBlocks& operator=(const SmallBlocks&) = delete;

  BlockSize& size() { return size_; }

  // Posts this rank's block of `req` (which fits), or, with req null, an empty one (step 2).
  std::unique_ptr<SmallAllreduce> post(MPI_Comm comm, const OpRequest* req, const OpMeta& meta);

 private:
  friend class SmallAllreduce;
  void ensure_type();

  BlockSize size_;
  MPI_Op op_ = MPI_OP_NULL;
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
  std::size_t type_cap_ = 0;  // payload bytes of type_
  std::vector<unsigned char> in_, out_;
};

class SmallAllreduce : public Algorithm {
 public:
  SmallAllreduce(std::string what, unsigned char* out);  // use SmallBlocks::post
  ~SmallAllreduce() override = default;
  SmallAllreduce(const SmallAllreduce&) = delete;
  SmallAllreduce& operator=(const SmallAllreduce&) = delete;

  bool poll(bool& progressed) override;
  std::string waiting_on() const override;
  bool abandon() override;  // false: the blocks are the engine's memory, not the caller's

  // Step 5, once poll() returned true and the negotiation agreed: the sum into req.data.
  void finish(const OpRequest& req, int size) const;

 private:
  friend class SmallBlocks;
  MPI_Request req_ = MPI_REQUEST_NULL;
  bool done_ = false;
  std::string what_;
  unsigned char* out_;
};

// The negotiation and a block, polled together (step 1).
class Overlap : public Algorithm {
 public:
  Overlap(Algorithm& first, Algorithm& second) : a_(first), b_(second) {}
  bool poll(bool& progressed) override {
    if (!a_done_) a_done_ = a_.poll(progressed);
    if (!b_done_) b_done_ = b_.poll(progressed);
    return a_done_ && b_done_;
  }
  std::string waiting_on() const override {
    return a_done_ ? b_.waiting_on() : a_.waiting_on();
  }
  bool abandon() override {
    const bool a = a_.abandon();
    return b_.abandon() || a;
  }
  bool moving() const override { return a_.moving() || b_.moving(); }

 private:
  Algorithm& a_;
  Algorithm& b_;
  bool a_done_ = false, b_done_ = false;
};

}  // namespace dlion
