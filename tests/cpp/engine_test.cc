// The engine on its own, without Python: run under mpiexec with 1..N ranks (and sanitizers).
// Checks allreduce (collective and ring paths, many segments, paced on emulated links),
// broadcast, allgather, barrier, mismatches that every rank detects (count, layout), and a clean
// shutdown.
#include <mpi.h>

#include <cstdio>
#include <string>
#include <vector>

#include "check.h"
#include "common/error.h"
#include "engine/engine.h"

using namespace dlion;

static void test_allreduce(Engine& e, std::size_t n, ReduceOp op) {
  const int r = e.rank(), p = e.size();
  std::vector<double> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<double>(i % 97) + r;
  OpRequest req;
  req.kind = OpKind::Allreduce;
  req.dtype = DType::Float64;
  req.reduce = op;
  req.data = x.data();
  req.count = n;
  req.name = "x" + std::to_string(n);
  auto h = e.submit(req);
  CHECK(h->wait(30.0), "allreduce of %zu timed out", n);
  for (std::size_t i = 0; i < n; ++i) {
    double want = static_cast<double>(i % 97) * p + p * (p - 1) / 2.0;
    if (op == ReduceOp::Average) want /= p;
    CHECK(std::abs(x[i] - want) < 1e-9, "n=%zu i=%zu got %f want %f", n, i, x[i], want);
  }
}

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  CHECK(provided == MPI_THREAD_MULTIPLE, "no MPI_THREAD_MULTIPLE");
  {
    EngineConfig config;
    config.ring_threshold_bytes = 64;   // most allreduces take the ring
    config.ring_segment_bytes = 1024;   // with many segments in flight
    config.stall_timeout_s = 30;
    Engine e(MPI_COMM_WORLD, config);
    for (std::size_t n : {0, 1, 3, 8, 100, 1000, 12345, 200000})
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Average}) test_allreduce(e, n, op);

    // Emulated links (every rank's sends on one wire of a local table, 1 ms latency): the
    // rings hold each segment's send until the link carries it, and still add up exactly.
    e.share_wires(SiteClocks::local(1));
    e.set_caps(std::vector<LinkCap>(static_cast<std::size_t>(e.size()), {200e6, 0.001, 0}));
    for (std::size_t n : {100, 12345, 200000})
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Average}) test_allreduce(e, n, op);
    CHECK(!error_of([&] { e.set_caps({}); }).empty(), "one cap per rank");

    // Two sites (the lower half of the ranks and the upper half): site-aware allreduce (still
    // paced).
    std::vector<int> sites;
    for (int r = 0; r < e.size(); ++r) sites.push_back(2 * r / e.size());
    e.set_sites(sites);
    for (std::size_t n : {3, 100, 12345, 200000})
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Average}) test_allreduce(e, n, op);
    if (e.size() >= 3) CHECK(e.stats().hierarchical_allreduces > 0, "no hierarchical allreduce");

    std::vector<float> b(1000, static_cast<float>(e.rank()));
    OpRequest bc;
    bc.kind = OpKind::Broadcast;
    bc.dtype = DType::Float32;
    bc.data = b.data();
    bc.count = b.size();
    bc.root = e.size() - 1;
    bc.name = "b";
    CHECK(e.submit(bc)->wait(30.0), "broadcast timed out");
    for (float v : b) CHECK(v == static_cast<float>(e.size() - 1), "broadcast got %f", v);

    std::vector<unsigned char> mine(static_cast<std::size_t>(e.rank()) + 1,
                                    static_cast<unsigned char>(e.rank()));
    OpRequest ag;
    ag.kind = OpKind::Allgather;
    ag.data = mine.data();
    ag.count = mine.size();
    ag.name = "g";
    auto h = e.submit(ag);
    CHECK(h->wait(30.0), "allgather timed out");
    CHECK(h->output_counts().size() == static_cast<std::size_t>(e.size()), "allgather counts");

    if (e.size() > 1) {  // a count mismatch fails on every rank, and the engine goes on
      std::vector<double> x(e.rank() == 0 ? 10 : 11, 1.0);
      OpRequest bad;
      bad.kind = OpKind::Allreduce;
      bad.dtype = DType::Float64;
      bad.reduce = ReduceOp::Sum;
      bad.data = x.data();
      bad.count = x.size();
      bad.name = "bad";
      bool mismatch = false;
      try {
        e.submit(bad)->wait(30.0);
      } catch (const MismatchError& err) {
        mismatch = std::string(err.what()).find("rank 1 submitted allreduce 'bad'") !=
                   std::string::npos;
      }
      CHECK(mismatch, "no MismatchError naming rank 1");

      // The same 16 bytes as int32[4] on rank 0 and int64[2] elsewhere: the layouts differ.
      std::vector<unsigned char> raw(16, static_cast<unsigned char>(e.rank()));
      OpRequest layout;
      layout.kind = OpKind::Broadcast;
      layout.data = raw.data();
      layout.count = raw.size();
      layout.name = "layout";
      layout.layout = e.rank() == 0 ? "int32[4]" : "int64[2]";
      bool named = false;
      try {
        e.submit(layout)->wait(30.0);
      } catch (const MismatchError& err) {
        const std::string what = err.what();
        named = what.find("int32[4]") != std::string::npos &&
                what.find("rank 1 submitted broadcast 'layout'") != std::string::npos &&
                what.find("int64[2]") != std::string::npos;
      }
      CHECK(named, "no MismatchError naming both layouts");
      CHECK(raw[0] == static_cast<unsigned char>(e.rank()), "a mismatched broadcast wrote data");
    }
    OpRequest barrier;
    barrier.kind = OpKind::Barrier;
    barrier.name = "end";
    CHECK(e.submit(barrier)->wait(30.0), "barrier timed out");
    CHECK(e.poisoned().empty(), "engine poisoned: %s", e.poisoned().c_str());
    e.shutdown();
    bool refused = false;
    try {
      e.submit(barrier);
    } catch (const EngineShutdown&) {
      refused = true;
    }
    CHECK(refused, "submit after shutdown was accepted");
  }
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) std::printf("engine_test: ok\n");
  MPI_Finalize();
  return 0;
}
