// Message storage (csrc/wire/message.h): zero-filled construction, copies and moves, reset
// that shrinks in place and grows into fresh (huge-page aligned, for large sizes) storage, and
// a large encoded message that validates from that storage.
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "common/error.h"
#include "wire/codec.h"
#include "wire/encode.h"

namespace {

namespace wire = dlion::wire;

void test_storage() {
  const wire::Message zero(100);
  CHECK(zero.size() == 100 && zero.capacity() >= 100, "size %zu", zero.size());
  for (std::size_t i = 0; i < 100; ++i) CHECK(zero.data()[i] == 0, "byte %zu not zero", i);
  wire::Message m(16);
  m.data()[3] = 7;
  wire::Message copy(m);
  CHECK(copy.size() == 16 && copy.data()[3] == 7 && copy.data() != m.data(), "copy");
  wire::Message moved(std::move(copy));
  CHECK(moved.size() == 16 && moved.data()[3] == 7, "move");
  CHECK(copy.size() == 0 && copy.capacity() == 0, "moved-from keeps %zu", copy.size());
  m.reset(8);  // shrinks: the storage stays
  CHECK(m.size() == 8 && m.data()[3] == 7 && m.capacity() >= 16, "shrink");
  const std::size_t huge = wire::Message::kHugeBytes + 5;
  m.reset(huge);  // grows: new storage, huge-page aligned
  CHECK(m.size() == huge && m.capacity() >= huge, "grow to %zu", m.capacity());
  CHECK(reinterpret_cast<std::uintptr_t>(m.data()) % (std::size_t{2} << 20) == 0,
        "large storage not 2 MiB aligned");
  std::memset(m.data(), 0xab, huge);  // all of it is writable
  wire::Message big(m);
  CHECK(std::memcmp(big.data(), m.data(), huge) == 0, "large copy differs");
  m = wire::Message();
  CHECK(m.size() == 0 && m.data() == nullptr, "assigned empty");
}

// A dense message encoded into large pooled storage (grown from a small one, as the engine's
// pool does) validates and carries x exactly.
void test_large_encode() {
  const std::size_t n = 400000;
  std::vector<float> x(n);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (float& v : x) v = normal(rng);
  wire::Fields f;
  f.sender = 1, f.group = 9, f.step = 3, f.weight = 0.5f;
  wire::Message storage(100);
  const wire::Message m = wire::encode(x.data(), n, wire::Codec{}, f, 0, nullptr,
                                       std::move(storage));
  CHECK(m.size() == wire::kHeaderBytes + 4 * n && m.capacity() >= m.size(), "size %zu", m.size());
  const wire::Decoded d = wire::validate(m.data(), m.size(), 1, 9, n);
  CHECK(d.values().size == n, "decoded %zu", d.values().size);
  CHECK(std::memcmp(d.values().data, x.data(), 4 * n) == 0, "values differ");
}

}  // namespace

int main() {
  test_storage();
  test_large_encode();
  std::printf("message_test: ok\n");
  return 0;
}
