// Negotiation: before any data moves, every rank tells every other rank what it submitted as
// its n-th operation, so that a disagreement (another op, name, dtype, count, root or layout)
// becomes a MismatchError naming the ranks and the operation on every rank instead of a hang
// or a truncated message. It is also the engine's barrier.
//
// Protocol, per operation (seq = n, the same on every rank because ranks submit in order):
//   1. post Irecv of one OpMeta from every peer (tag kMetaTag; MPI keeps per-peer order);
//   2. Isend our OpMeta to every peer;
//   3. when all have arrived, validate: every field that must agree is compared with the
//      lowest rank's; every rank sees the same set of metas, so all decide the same way and
//      the operation is dropped everywhere on a mismatch (the engine stays usable). For
//      allreduce and broadcast the layout (dtype and shape, as the caller states it) is one
//      of those fields: equal byte counts of other dtypes or shapes are a mismatch too.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/algorithm.h"
#include "engine/op.h"

namespace dlion {

struct OpMeta {
  std::uint64_t seq;
  std::uint64_t count;
  std::uint64_t signature;
  std::uint32_t kind;
  std::uint32_t dtype;
  std::uint32_t reduce;
  std::int32_t root;
  char name[64];
  char layout[kLayoutChars + 1];  // OpRequest::layout, truncated, NUL-terminated
};

constexpr int kMetaTag = 7;

OpMeta make_meta(std::uint64_t seq, const OpRequest& req);

class Negotiation : public Algorithm {
 public:
  Negotiation(MPI_Comm comm, int rank, int size, const OpMeta& mine);
  ~Negotiation() override;
  Negotiation(const Negotiation&) = delete;
  Negotiation& operator=(const Negotiation&) = delete;

  bool poll(bool& progressed) override;
  std::string waiting_on() const override;
  bool abandon() override;

  // Throws MismatchError if the ranks disagree. Call once poll() returned true.
  void validate() const;
  // Every rank's description (metas()[r] is rank r's). Call once poll() returned true.
  const std::vector<OpMeta>& metas() const { return metas_; }
  // Element counts per rank (for allgather).
  std::vector<std::uint64_t> counts() const;

 private:
  MPI_Comm comm_;
  int rank_;
  int size_;
  OpMeta mine_;
  std::vector<OpMeta> metas_;          // metas_[r] = rank r's
  std::vector<MPI_Request> recvs_;     // one per rank (MPI_REQUEST_NULL for ourselves)
  std::vector<MPI_Request> sends_;
  std::vector<int> arrived_;
  int pending_ = 0;
};

std::string describe(const OpMeta& m);

}  // namespace dlion
