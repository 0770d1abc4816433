#include "engine/site_clocks.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace dlion {

namespace {

std::string failed(const char* call, const std::string& name) {
  return detail::concat("emulated site links: ", call, "(", name, ") failed: ",
                        std::strerror(errno));
}

// Closes a descriptor on every path out of open().
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

bool valid_name(const std::string& name) {
  return name.size() >= 2 && name.size() <= 201 && name[0] == '/' &&
         std::all_of(name.begin() + 1, name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
         });
}

}  // namespace

std::shared_ptr<SiteClocks> SiteClocks::open(const std::string& name, std::size_t slots) {
  DLION_CHECK(valid_name(name), InvalidArgument, "emulated site links: bad shared table name '",
              name, "': '/' and 1 to 200 characters of [A-Za-z0-9._-]");
  DLION_CHECK(slots >= 1 && slots <= (std::size_t{1} << 20), InvalidArgument,
              "emulated site links: ", slots, " clocks; 1 to 2^20");
  const Fd fd(::shm_open(name.c_str(), O_CREAT | O_RDWR, 0600));
  if (fd.get() < 0) throw Error(failed("shm_open", name));
  const std::size_t bytes = bytes_for(slots);
  // The first process to open it sizes it (zero-filled); the others find that size already.
  if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) throw Error(failed("ftruncate", name));
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (base == MAP_FAILED) throw Error(failed("mmap", name));
  return std::make_shared<SiteClocks>(Key{}, base, slots, true);
}

std::shared_ptr<SiteClocks> SiteClocks::local(std::size_t slots) {
  DLION_CHECK(slots >= 1 && slots <= (std::size_t{1} << 20), InvalidArgument,
              "emulated site links: ", slots, " clocks; 1 to 2^20");
  void* base = ::mmap(nullptr, bytes_for(slots), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) throw Error(failed("mmap", "anonymous"));
  return std::make_shared<SiteClocks>(Key{}, base, slots, false);
}

bool SiteClocks::unlink(const std::string& name) {
  DLION_CHECK(valid_name(name), InvalidArgument, "emulated site links: bad shared table name '",
              name, "'");
  if (::shm_unlink(name.c_str()) == 0) return true;
  if (errno == ENOENT) return false;
  throw Error(failed("shm_unlink", name));
}

SiteClocks::SiteClocks(Key, void* base, std::size_t slots, bool shared)
    // The memory is zero-filled and suitably aligned (page-aligned), and a lock-free
    // std::atomic<std::int64_t> is an int64_t in memory: 0 is a valid, never-used clock.
    : lines_(static_cast<Line*>(base)), slots_(slots), shared_(shared) {}

SiteClocks::~SiteClocks() { ::munmap(lines_, bytes_for(slots_)); }

SiteClocks::Stamp& SiteClocks::slot(std::size_t i) {
  DLION_CHECK(i < slots_, InvalidArgument, "emulated site links: clock ", i, " of ", slots_);
  return lines_[i].free_at_ns;
}

}  // namespace dlion
