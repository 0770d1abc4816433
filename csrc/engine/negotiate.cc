#include "engine/negotiate.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "common/error.h"
#include "engine/mpi_check.h"
#include "engine/requests.h"

namespace dlion {

OpMeta make_meta(std::uint64_t seq, const OpRequest& req) {
  OpMeta m{};
  m.seq = seq;
  m.count = req.count;
  m.signature = req.signature;
  m.kind = static_cast<std::uint32_t>(req.kind);
  m.dtype = static_cast<std::uint32_t>(req.dtype);
  m.reduce = static_cast<std::uint32_t>(req.reduce);
  m.root = req.kind == OpKind::Broadcast ? req.root : 0;
  std::size_t n = std::min(req.name.size(), sizeof(m.name) - 1);
  std::memcpy(m.name, req.name.data(), n);
  const std::size_t l = std::min(req.layout.size(), sizeof(m.layout) - 1);
  std::memcpy(m.layout, req.layout.data(), l);
  return m;
}

std::string describe(const OpMeta& m) {
  std::ostringstream out;
  const std::string name(m.name, std::find(m.name, m.name + sizeof(m.name), '\0'));
  out << to_string(static_cast<OpKind>(m.kind)) << " '" << name << "' (op #" << m.seq << ", "
      << to_string(static_cast<DType>(m.dtype)) << " x " << m.count;
  if (static_cast<OpKind>(m.kind) == OpKind::Allreduce)
    out << ", " << to_string(static_cast<ReduceOp>(m.reduce));
  if (static_cast<OpKind>(m.kind) == OpKind::Broadcast) out << ", root " << m.root;
  const char* layout_end = std::find(m.layout, m.layout + sizeof(m.layout), '\0');
  if (layout_end != m.layout) out << ", " << std::string(m.layout, layout_end);
  if (m.signature != 0) out << ", layout " << std::hex << m.signature << std::dec;
  out << ")";
  return out.str();
}

Negotiation::Negotiation(MPI_Comm comm, int rank, int size, const OpMeta& mine)
    : comm_(comm),
      rank_(rank),
      size_(size),
      mine_(mine),
      metas_(static_cast<std::size_t>(size)),
      recvs_(static_cast<std::size_t>(size), MPI_REQUEST_NULL),
      sends_(static_cast<std::size_t>(size), MPI_REQUEST_NULL),
      arrived_(static_cast<std::size_t>(size), 0) {
  metas_[static_cast<std::size_t>(rank)] = mine;
  arrived_[static_cast<std::size_t>(rank)] = 1;
  for (int r = 0; r < size; ++r) {
    if (r == rank) continue;
    DLION_MPI(MPI_Irecv(&metas_[static_cast<std::size_t>(r)], sizeof(OpMeta), MPI_BYTE, r,
                        kMetaTag, comm, &recvs_[static_cast<std::size_t>(r)]));
    ++pending_;
  }
  for (int r = 0; r < size; ++r) {
    if (r == rank) continue;
    DLION_MPI(MPI_Isend(&mine_, sizeof(OpMeta), MPI_BYTE, r, kMetaTag, comm,
                        &sends_[static_cast<std::size_t>(r)]));
  }
}

Negotiation::~Negotiation() { abandon(); }

bool Negotiation::poll(bool& progressed) {
  if (pending_ > 0) {
    std::vector<int> idx(recvs_.size());
    int outcount = 0;
    DLION_MPI(MPI_Testsome(static_cast<int>(recvs_.size()), recvs_.data(), &outcount, idx.data(),
                           MPI_STATUSES_IGNORE));
    if (outcount != MPI_UNDEFINED && outcount > 0) {
      progressed = true;
      for (int i = 0; i < outcount; ++i) arrived_[static_cast<std::size_t>(idx[i])] = 1;
      pending_ -= outcount;
    }
  }
  if (pending_ > 0) return false;
  int flag = 0;
  DLION_MPI(MPI_Testall(static_cast<int>(sends_.size()), sends_.data(), &flag,
                        MPI_STATUSES_IGNORE));
  return flag != 0;
}

std::string Negotiation::waiting_on() const {
  std::ostringstream out;
  int missing = 0;
  for (int r = 0; r < size_; ++r) {
    if (arrived_[static_cast<std::size_t>(r)]) continue;
    out << (missing++ ? ", " : "") << r;
  }
  if (missing == 0) return "completion of its own sends of " + describe(mine_);
  return (missing == 1 ? "rank " : "ranks ") + out.str() + " to submit " + describe(mine_);
}

bool Negotiation::abandon() {
  release_requests(recvs_, sends_);
  return false;  // the metas are the negotiation's own memory, never the caller's buffer
}

void Negotiation::validate() const {
  const OpMeta& ref = metas_[0];
  const OpKind kind = static_cast<OpKind>(ref.kind);
  std::ostringstream diffs;
  int bad = 0;
  for (int r = 1; r < size_; ++r) {
    const OpMeta& m = metas_[static_cast<std::size_t>(r)];
    bool same = m.seq == ref.seq && m.kind == ref.kind && m.dtype == ref.dtype &&
                std::strncmp(m.name, ref.name, sizeof(m.name)) == 0;
    if (kind == OpKind::Allreduce || kind == OpKind::Broadcast)
      same = same && m.count == ref.count && m.signature == ref.signature &&
             std::strncmp(m.layout, ref.layout, sizeof(m.layout)) == 0;
    if (kind == OpKind::Allreduce) same = same && m.reduce == ref.reduce;
    if (kind == OpKind::Broadcast) same = same && m.root == ref.root;
    if (same) continue;
    ++bad;
    diffs << "\n  rank " << r << " submitted " << describe(m);
  }
  if (bad == 0) return;
  throw MismatchError(detail::concat(
      "rank ", rank_, ": ranks submitted different operations as op #", mine_.seq,
      ":\n  rank 0 submitted ", describe(ref), diffs.str(),
      "\nEvery rank must submit the same operations, in the same order, with the same names, "
      "dtypes, shapes and sizes (for allreduce and broadcast). The operation was dropped on "
      "every rank."));
}

std::vector<std::uint64_t> Negotiation::counts() const {
  std::vector<std::uint64_t> out;
  out.reserve(metas_.size());
  for (const auto& m : metas_) out.push_back(m.count);
  return out;
}

}  // namespace dlion
