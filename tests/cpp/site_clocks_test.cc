// Shared emulated wires (site_clocks.h, link.h) in one process: a table opened twice by name is
// one memory (as two processes of a host see it), its name can be removed while it stays
// mapped, and links paced on one clock take turns on it. Two threads, each with its own link
// on its own mapping, reserve the wire at once (the compare-and-swap loop): no two messages
// overlap on it, the wire carries them back to back, and each link's timing counts from the
// end of its own previous message. A link of its own is not held up by the shared wire; a
// message is released one latency after its last byte left the wire; a child process sees
// and takes the parent's wire.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "engine/link.h"
#include "engine/site_clocks.h"

using namespace dlion;
using std::chrono::milliseconds;

namespace {

std::int64_t ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::string table_name(const char* what) {
  return "/dlion-test-" + std::to_string(::getpid()) + "-" + what;
}

struct Interval {
  std::int64_t begin, end;
  int sender;
};

}  // namespace

int main() {
  constexpr double kRate = 1e6;           // bytes/s: 1000 bytes take 1 ms
  constexpr std::size_t kBytes = 1000;
  const auto t0 = Clock::now();

  // Bad names and sizes are refused; unlinking a missing name says so.
  CHECK(!error_of([] { SiteClocks::open("no-slash", 1); }).empty(), "a name starts with /");
  CHECK(!error_of([] { SiteClocks::open("/a/b", 1); }).empty(), "one component only");
  CHECK(!error_of([] { SiteClocks::open(table_name("zero"), 0); }).empty(), "slots >= 1");
  CHECK(!SiteClocks::unlink(table_name("never")), "unlinking a missing name is false");

  // One table, two mappings: what one writes, the other reads. The name can go at once.
  const std::string name = table_name("wires");
  auto a = SiteClocks::open(name, 4);
  auto b = SiteClocks::open(name, 4);
  CHECK(a->shared() && a->slots() == 4, "shared table of 4");
  CHECK(SiteClocks::unlink(name), "the name is removed");
  CHECK(!SiteClocks::unlink(name), "and gone");
  CHECK(b->slot(3).load() == 0, "a new table is zero-filled");
  a->slot(3).store(42);
  CHECK(b->slot(3).load() == 42, "two mappings are one memory");
  CHECK(&a->slot(3) != &b->slot(3), "at two addresses");
  CHECK(!error_of([&] { a->slot(4); }).empty(), "slot out of range");
  a->slot(3).store(0);

  // Latency: released one latency after the last byte left; the wire is held only B / rate.
  {
    Link l;
    l.set_cap({kRate, 0.005, 3}, &a->slot(3));
    const Link::Slot s = l.schedule(kBytes, t0);
    CHECK(s.start == t0, "an idle wire starts at once");
    CHECK(s.release - t0 == milliseconds(6), "1 ms on the wire, then 5 ms latency");
    CHECK(b->slot(3).load() == ns(t0 + milliseconds(1)), "the wire is free after 1 ms");
    const Link::Slot ack = l.control(t0);
    CHECK(ack.start == t0 && ack.release - t0 == milliseconds(5), "a control message: latency");
    CHECK(b->slot(3).load() == ns(t0 + milliseconds(1)), "and does not take the wire");
  }

  // Two senders at once, each on its own mapping of one clock.
  constexpr int kMessages = 2000;
  std::vector<std::vector<Interval>> got(2);
  std::vector<std::vector<Link::Slot>> slots(2);
  std::atomic<int> ready{0};
  auto sender = [&](int id, SiteClocks& table) {
    Link l;
    l.set_cap({kRate, 0.0, 1}, &table.slot(1));
    ready.fetch_add(1);
    while (ready.load() < 2) std::this_thread::yield();
    for (int i = 0; i < kMessages; ++i) {
      const Link::Slot s = l.schedule(kBytes, t0);  // all queued "now": the wire never idles
      slots[static_cast<std::size_t>(id)].push_back(s);
      got[static_cast<std::size_t>(id)].push_back(
          {ns(s.release) - 1'000'000, ns(s.release), id});
    }
  };
  std::thread ta(sender, 0, std::ref(*a)), tb(sender, 1, std::ref(*b));
  ta.join();
  tb.join();
  std::vector<Interval> all = got[0];
  all.insert(all.end(), got[1].begin(), got[1].end());
  std::sort(all.begin(), all.end(), [](const Interval& x, const Interval& y) {
    return x.begin < y.begin;
  });
  CHECK(all.front().begin == ns(t0), "the first message starts at once");
  for (std::size_t i = 1; i < all.size(); ++i)
    CHECK(all[i].begin == all[i - 1].end, "message %zu starts when the one before left "
          "(no overlap, no gap): %lld vs %lld", i, static_cast<long long>(all[i].begin),
          static_cast<long long>(all[i - 1].end));
  CHECK(all.back().end == ns(t0) + 2LL * kMessages * 1'000'000, "2 x %d ms in all", kMessages);
  CHECK(a->slot(1).load() == all.back().end, "the clock is at the last message's end");
  for (int id = 0; id < 2; ++id) {
    const auto& s = slots[static_cast<std::size_t>(id)];
    for (std::size_t i = 1; i < s.size(); ++i)
      CHECK(s[i].start == s[i - 1].release, "sender %d: message %zu is timed from the end of "
            "its own previous one", id, i);
  }
  long long turns = 0;  // how often the wire passed from one sender to the other
  for (std::size_t i = 1; i < all.size(); ++i) turns += all[i].sender != all[i - 1].sender;
  std::printf("site_clocks_test: the wire passed %lld times between the two senders\n", turns);

  // A link of its own beside the busy shared wire: not held up by it.
  {
    Link own;
    own.set_cap({kRate, 0.0});
    const Link::Slot s = own.schedule(kBytes, t0);
    CHECK(s.start == t0 && s.release - t0 == milliseconds(1), "its own wire is idle");
  }

  // Another process of the host: it maps the table by name and takes the wire after us.
  {
    const std::string shared_name = table_name("fork");
    auto parent = SiteClocks::open(shared_name, 2);
    Link l;
    l.set_cap({kRate, 0.0, 0}, &parent->slot(0));
    l.schedule(kBytes, t0);  // [t0, t0 + 1 ms)
    const pid_t child = ::fork();
    CHECK(child >= 0, "fork");
    if (child == 0) {
      auto mine = SiteClocks::open(shared_name, 2);
      Link c;
      c.set_cap({kRate, 0.0, 0}, &mine->slot(0));
      const Link::Slot s = c.schedule(kBytes, t0);
      ::_exit(s.release == t0 + milliseconds(2) ? 0 : 1);
    }
    int status = 0;
    CHECK(::waitpid(child, &status, 0) == child, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child queued behind the parent");
    CHECK(parent->slot(0).load() == ns(t0 + milliseconds(2)), "and the parent sees its turn");
    CHECK(SiteClocks::unlink(shared_name), "unlink");
  }

  auto local = SiteClocks::local(2);
  CHECK(!local->shared() && local->slot(1).load() == 0, "a local table");
  std::printf("site_clocks_test: ok\n");
  return 0;
}
