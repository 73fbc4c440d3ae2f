// ugfs2-mmap-stress: the deadlock lab's stress tool. Reproduces from user space the gfs2 class
// of deadlocks where a page fault taken inside read()/write() (while the filesystem holds one
// inode's cluster lock) needs another inode's lock, or the same one, or another node's: two
// worker processes do O_DIRECT and buffered I/O into and out of shared mappings of each other's
// files (scenarios S1..S7, scenarios.cc), through one or several mounts of the same volume. Every
// byte read is verified, a watchdog turns "no progress" into a HANG report, and a table (or
// JSON) summarizes every cell: scenario x I/O lock policy x placement.
//
// Processes: the parent never touches the filesystem itself (a hung mount cannot hang it); a
// helper child creates a cell's files, checks them afterwards through every directory used and
// removes them; the two workers are fork()ed children (the filesystem's lock owners are
// processes). Children report progress in a MAP_SHARED|MAP_ANONYMOUS region (common.h), which
// the parent polls every 100 ms.
//
// Hidden test option: --inject-stall S makes worker 1 of scenario S stop progressing (sleep
// until killed) five steps after the start, to check the watchdog and the hang path.
#include <getopt.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common.h"
#include "runner.h"
#include "scenarios.h"

namespace ugfs2::mmap_stress {
namespace {

constexpr int kExitFail = 1;
constexpr int kExitUsage = 2;
constexpr int kExitHang = 3;

constexpr const char* kUsage =
    "usage: ugfs2-mmap-stress --dir DIR[,DIR2,...] [--scenarios S1,S2,...|all]\n"
    "                         [--placement one|spread|both] [--policies P1,P2,...]\n"
    "                         [--duration SEC] [--watchdog SEC] [--json] [--bench ROUNDS]\n"
    "                         [--hang-cmd CMD] [--policy-cmd CMD] [--retries-cmd CMD]\n"
    "                         [--size BYTES] [--seed N]\n"
    "\n"
    "Stress for page faults taken inside read()/write(): two worker processes do O_DIRECT and\n"
    "buffered I/O into and out of shared mappings of the same or each other's files, verify\n"
    "every byte, and a watchdog reports hangs.\n"
    "\n"
    "  --dir DIR,...     directories in mounts of the same filesystem (e.g. node 1's and node\n"
    "                    2's mountpoints of one shared volume, or an ext4 directory as a\n"
    "                    baseline). Files are created in DIR/mmap-stress.PID.SCENARIO of the\n"
    "                    first DIR and reached through the others by the same relative path.\n"
    "  --scenarios LIST  S1..S7 or all (default):\n"
    "%s"
    "  --placement P     one: every worker uses DIR1; spread: worker i uses DIR(i mod ndirs)\n"
    "                    (S5: its writer, worker 0, uses DIR2); both (default with 2+ dirs).\n"
    "  --policies LIST   labels of the cells (default: one cell labelled -). Before each cell\n"
    "                    --policy-cmd runs once per distinct dir.\n"
    "  --policy-cmd CMD  e.g. 'ugfs2-tool policy {dir} {policy}'; non-zero exit is fatal.\n"
    "  --retries-cmd CMD e.g. 'ugfs2-tool counters {dir}': must print 'io_retries N'; run before\n"
    "                    and after the workers of each cell for each distinct dir, the summed\n"
    "                    delta is the cell's retries (without it: -).\n"
    "  --hang-cmd CMD    run on a hang ({dir} = DIR1), 30 s timeout; its output goes into the\n"
    "                    report (e.g. 'ugfs2-tool glocks {dir}').\n"
    "  --duration SEC    per cell (default 3).\n"
    "  --watchdog SEC    a worker without progress that long is a HANG (default 20).\n"
    "  --size BYTES      per-file size, a multiple of 64 KiB (default 1M; suffixes K, M, G).\n"
    "  --seed N          seed of the workers' random offsets and lengths (default: from the\n"
    "                    clock; printed).\n"
    "  --bench ROUNDS    run each cell ROUNDS times, the policies interleaved round by round;\n"
    "                    report the median iters/s (min-max), the median retries/1k ops, and\n"
    "                    with two policies the ratio of their medians.\n"
    "  --json            print one JSON object instead of the table.\n"
    "\n"
    "Columns: iterations completed between the start and the end of the cell's duration and\n"
    "iters/s over that time (CLOCK_MONOTONIC); ops: the workers' I/O operations over their whole\n"
    "run (each syscall: read, write, msync, mmap, rename, link, fstat, ...; in S4 and S5 also\n"
    "each page verified through a mapping); retries and retries per 1000 ops; dropped pins:\n"
    "reads into a mapping repeated because, with placement spread, every block held either the\n"
    "data read or the mapping's previous content (another node took the mapped file's glock\n"
    "while the read had its pages pinned, and the revoke dropped them); hangs; errors\n"
    "(verification errors and failed syscalls, SIGBUS/SIGSEGV included). Details of every\n"
    "failure and hang follow the table. {dir} and {policy} are substituted shell-quoted.\n"
    "\n"
    "Exit status: 0 every cell ran without hang or error, 1 a verification or syscall error (or a\n"
    "failed --policy-cmd/--retries-cmd), 3 a hang (and no error), 2 usage.\n";

void Usage(FILE* out) {
  std::string list;
  for (const ScenarioDef& s : AllScenarios())
    list += StrFormat("                    %s %s\n", s.name, s.title);
  std::fprintf(out, kUsage, list.c_str());
}

[[noreturn]] void UsageError(const std::string& msg) {
  std::fprintf(stderr, "ugfs2-mmap-stress: %s\n", msg.c_str());
  std::fprintf(stderr, "Try 'ugfs2-mmap-stress -h'.\n");
  std::exit(kExitUsage);
}

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = s.find(',', start);
    out.push_back(s.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

double ParseSeconds(const char* opt, const char* arg) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(arg, &end);
  if (errno != 0 || end == arg || *end != '\0' || !(v > 0) || v > 1e6) {
    UsageError(StrFormat("%s: '%s' is not a positive number of seconds", opt, arg));
  }
  return v;
}

uint64_t ParseUnsigned(const char* opt, const char* arg, bool suffixes) {
  char* end = nullptr;
  errno = 0;
  if (arg[0] == '-') UsageError(StrFormat("%s: '%s' is negative", opt, arg));
  unsigned long long v = std::strtoull(arg, &end, 0);
  if (errno != 0 || end == arg) UsageError(StrFormat("%s: '%s' is not a number", opt, arg));
  if (suffixes && *end != '\0' && end[1] == '\0') {
    const char* units = "KMG";
    const char* u = std::strchr(units, std::toupper(static_cast<unsigned char>(*end)));
    if (u != nullptr && *u != '\0') {
      const int shift = 10 * static_cast<int>(u - units + 1);
      if (v > (ULLONG_MAX >> shift)) UsageError(StrFormat("%s: '%s' is too large", opt, arg));
      v <<= shift;
      ++end;
    }
  }
  if (*end != '\0') UsageError(StrFormat("%s: '%s' is not a number", opt, arg));
  return v;
}

Config ParseArgs(int argc, char** argv) {
  enum {
    kOptDir = 256,
    kOptScenarios,
    kOptPlacement,
    kOptPolicies,
    kOptDuration,
    kOptWatchdog,
    kOptJson,
    kOptBench,
    kOptHangCmd,
    kOptPolicyCmd,
    kOptRetriesCmd,
    kOptSize,
    kOptSeed,
    kOptInjectStall,
  };
  static const option kOptions[] = {
      {"dir", required_argument, nullptr, kOptDir},
      {"scenarios", required_argument, nullptr, kOptScenarios},
      {"placement", required_argument, nullptr, kOptPlacement},
      {"policies", required_argument, nullptr, kOptPolicies},
      {"duration", required_argument, nullptr, kOptDuration},
      {"watchdog", required_argument, nullptr, kOptWatchdog},
      {"json", no_argument, nullptr, kOptJson},
      {"bench", required_argument, nullptr, kOptBench},
      {"hang-cmd", required_argument, nullptr, kOptHangCmd},
      {"policy-cmd", required_argument, nullptr, kOptPolicyCmd},
      {"retries-cmd", required_argument, nullptr, kOptRetriesCmd},
      {"size", required_argument, nullptr, kOptSize},
      {"seed", required_argument, nullptr, kOptSeed},
      {"inject-stall", required_argument, nullptr, kOptInjectStall},
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0},
  };
  Config cfg;
  std::string placement;
  bool have_seed = false;
  std::vector<std::string> scenario_names = {"all"};
  opterr = 0;
  for (;;) {
    const int c = getopt_long(argc, argv, "h", kOptions, nullptr);
    if (c == -1) break;
    const char* name = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
    switch (c) {
      case 'h':
        Usage(stdout);
        std::exit(0);
      case kOptDir:
        for (const std::string& d : SplitCommas(optarg)) {
          if (d.empty()) UsageError("--dir: empty directory name");
          cfg.dirs.push_back(d);
        }
        break;
      case kOptScenarios:
        scenario_names = SplitCommas(optarg);
        break;
      case kOptPlacement:
        placement = optarg;
        if (placement != "one" && placement != "spread" && placement != "both") {
          UsageError(StrFormat("--placement: '%s' is not one, spread or both", optarg));
        }
        break;
      case kOptPolicies:
        cfg.policies = SplitCommas(optarg);
        for (const std::string& p : cfg.policies) {
          if (p.empty()) UsageError("--policies: empty policy name");
        }
        break;
      case kOptDuration:
        cfg.duration = ParseSeconds("--duration", optarg);
        break;
      case kOptWatchdog:
        cfg.watchdog = ParseSeconds("--watchdog", optarg);
        break;
      case kOptJson:
        cfg.json = true;
        break;
      case kOptBench: {
        const uint64_t r = ParseUnsigned("--bench", optarg, false);
        if (r < 1 || r > 10000) UsageError("--bench: ROUNDS must be 1..10000");
        cfg.bench_rounds = static_cast<int>(r);
        break;
      }
      case kOptHangCmd:
        cfg.hang_cmd = optarg;
        break;
      case kOptPolicyCmd:
        cfg.policy_cmd = optarg;
        break;
      case kOptRetriesCmd:
        cfg.retries_cmd = optarg;
        break;
      case kOptSize:
        cfg.size = ParseUnsigned("--size", optarg, true);
        if (cfg.size == 0 || cfg.size % (64 * 1024) != 0 || cfg.size > (uint64_t{1} << 34)) {
          UsageError(StrFormat("--size: %s is not a multiple of 64 KiB in (0, 16 GiB]", optarg));
        }
        break;
      case kOptSeed:
        cfg.seed = ParseUnsigned("--seed", optarg, false);
        have_seed = true;
        break;
      case kOptInjectStall:
        if (FindScenario(optarg) == nullptr) {
          UsageError(StrFormat("--inject-stall: no scenario '%s'", optarg));
        }
        cfg.inject_stall = FindScenario(optarg)->name;
        break;
      case '?':
      default:
        if (optopt != 0) {
          UsageError(StrFormat("option %s needs an argument or is unknown", name));
        }
        UsageError(StrFormat("unknown option %s", name));
    }
  }
  if (optind < argc) UsageError(StrFormat("unexpected argument '%s'", argv[optind]));
  if (cfg.dirs.empty()) UsageError("--dir is required");
  for (std::string& d : cfg.dirs) {
    struct stat st;
    if (stat(d.c_str(), &st) != 0) {
      UsageError(StrFormat("--dir %s: %s", d.c_str(), std::strerror(errno)));
    }
    if (!S_ISDIR(st.st_mode)) UsageError(StrFormat("--dir %s: not a directory", d.c_str()));
    char* real = realpath(d.c_str(), nullptr);
    if (real != nullptr) {
      d = real;
      std::free(real);
    }
  }
  for (const std::string& s : scenario_names) {
    if (s == "all") {
      for (const ScenarioDef& def : AllScenarios()) {
        if (std::find(cfg.scenarios.begin(), cfg.scenarios.end(), &def) == cfg.scenarios.end()) {
          cfg.scenarios.push_back(&def);
        }
      }
      continue;
    }
    const ScenarioDef* def = FindScenario(s);
    if (def == nullptr)
      UsageError(StrFormat("--scenarios: no scenario '%s' (S1..S7 or all)", s.c_str()));
    if (std::find(cfg.scenarios.begin(), cfg.scenarios.end(), def) == cfg.scenarios.end()) {
      cfg.scenarios.push_back(def);
    }
  }
  if (placement.empty()) placement = cfg.dirs.size() >= 2 ? "both" : "one";
  if (placement != "spread") cfg.placements.push_back(Placement::kOne);
  if (placement != "one") cfg.placements.push_back(Placement::kSpread);
  if (cfg.policies.empty()) cfg.policies.push_back("-");
  if (!have_seed) {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cfg.seed = SplitMix64(static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL +
                          static_cast<uint64_t>(ts.tv_nsec) + static_cast<uint64_t>(getpid())) %
               1000000000ULL;
  }
  return cfg;
}

// One row of the report: a scenario under one placement and one policy, with its runs (one, or
// --bench of them).
struct Row {
  const ScenarioDef* sc;
  Placement pl;
  std::string policy;
  std::vector<int> dirs;
  std::vector<CellResult> runs;
  std::string skipped;  // why no run happened ("" if any did)
  int rounds_not_run = 0;

  bool Hung() const {
    return std::any_of(runs.begin(), runs.end(),
                       [](const CellResult& r) { return r.outcome == CellResult::Outcome::kHang; });
  }
  int Errors() const {
    int n = 0;
    for (const CellResult& r : runs) n += r.errors;
    return n;
  }
  std::string Result() const {
    if (runs.empty()) return skipped;
    if (Errors() > 0) return "FAIL";
    if (Hung()) return "HANG";
    if (rounds_not_run > 0) return StrFormat("ok (%d rounds not run: mount hung)", rounds_not_run);
    return "ok";
  }
  uint64_t Iterations() const {
    uint64_t n = 0;
    for (const CellResult& r : runs) n += r.iterations;
    return n;
  }
  uint64_t Ops() const {
    uint64_t n = 0;
    for (const CellResult& r : runs) n += r.ops;
    return n;
  }
  std::optional<int64_t> Retries() const {
    int64_t n = 0;
    for (const CellResult& r : runs) {
      if (!r.retries) return std::nullopt;
      n += *r.retries;
    }
    if (runs.empty()) return std::nullopt;
    return n;
  }
  uint64_t DroppedPins() const {
    uint64_t n = 0;
    for (const CellResult& r : runs) n += r.dropped_pins;
    return n;
  }
  int Hangs() const {
    int n = 0;
    for (const CellResult& r : runs) n += r.hangs;
    return n;
  }
  // The runs that completed cleanly (what medians are taken over).
  std::vector<const CellResult*> Clean() const {
    std::vector<const CellResult*> out;
    for (const CellResult& r : runs) {
      if (r.outcome == CellResult::Outcome::kOk) out.push_back(&r);
    }
    return out;
  }
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Rates {
  std::optional<double> iters;  // median (or the single run's)
  double min = 0;
  double max = 0;
  std::optional<double> retries_per_1k;
};

Rates RowRates(const Row& row) {
  Rates out;
  std::vector<const CellResult*> runs = row.Clean();
  if (runs.empty() && row.runs.size() == 1) runs.push_back(&row.runs[0]);  // show a failed run's
  if (runs.empty()) return out;
  std::vector<double> iters;
  std::vector<double> retries;
  for (const CellResult* r : runs) {
    iters.push_back(r->ItersPerSecond());
    if (r->RetriesPer1k()) retries.push_back(*r->RetriesPer1k());
  }
  out.iters = Median(iters);
  out.min = *std::min_element(iters.begin(), iters.end());
  out.max = *std::max_element(iters.begin(), iters.end());
  if (retries.size() == runs.size()) out.retries_per_1k = Median(retries);
  return out;
}

std::string DirsLabel(const std::vector<int>& dirs) {
  std::string out;
  for (const int d : dirs) out += (out.empty() ? "" : ",") + std::to_string(d + 1);
  return out;
}

std::string Rate(double v) { return StrFormat(v >= 100 ? "%.0f" : "%.1f", v); }

struct Ratio {
  const ScenarioDef* sc;
  Placement pl;
  std::optional<double> ratio;
};

std::vector<Ratio> Ratios(const Config& cfg, const std::vector<Row>& rows) {
  std::vector<Ratio> out;
  if (cfg.bench_rounds == 0 || cfg.policies.size() != 2) return out;
  for (size_t i = 0; i + 1 < rows.size(); i += 2) {
    const Rates a = RowRates(rows[i]);
    const Rates b = RowRates(rows[i + 1]);
    Ratio r{rows[i].sc, rows[i].pl, std::nullopt};
    if (a.iters && b.iters && *b.iters > 0) r.ratio = *a.iters / *b.iters;
    out.push_back(r);
  }
  return out;
}

void PrintTable(const Config& cfg, const std::vector<Row>& rows) {
  std::printf("# ugfs2-mmap-stress: size %llu, duration %g s, watchdog %g s, seed %llu%s\n",
              static_cast<unsigned long long>(cfg.size), cfg.duration, cfg.watchdog,
              static_cast<unsigned long long>(cfg.seed),
              cfg.bench_rounds > 0 ? StrFormat(", bench %d rounds", cfg.bench_rounds).c_str() : "");
  for (size_t i = 0; i < cfg.dirs.size(); ++i) {
    std::printf("# dir %zu: %s\n", i + 1, cfg.dirs[i].c_str());
  }
  const bool bench = cfg.bench_rounds > 0;
  std::vector<std::vector<std::string>> table;
  table.push_back({"scenario", "policy", "placement", "dirs", "iterations",
                   bench ? "iters/s median (min-max)" : "iters/s", "ops", "retries",
                   bench ? "retries/1k ops median" : "retries/1k ops", "dropped pins", "hangs",
                   "errors", "result"});
  for (const Row& row : rows) {
    const Rates rates = RowRates(row);
    const bool ran = !row.runs.empty();
    std::string iters = "-";
    if (rates.iters) {
      iters = Rate(*rates.iters);
      if (bench) iters += " (" + Rate(rates.min) + "-" + Rate(rates.max) + ")";
    }
    const std::optional<int64_t> retries = row.Retries();
    table.push_back(
        {row.sc->name, row.policy, PlacementName(row.pl), DirsLabel(row.dirs),
         ran ? std::to_string(row.Iterations()) : "-", iters, ran ? std::to_string(row.Ops()) : "-",
         retries ? std::to_string(*retries) : "-",
         rates.retries_per_1k ? StrFormat("%.2f", *rates.retries_per_1k) : "-",
         ran ? std::to_string(row.DroppedPins()) : "-", ran ? std::to_string(row.Hangs()) : "-",
         ran ? std::to_string(row.Errors()) : "-", row.Result()});
  }
  std::vector<size_t> width(table[0].size(), 0);
  for (const auto& line : table) {
    for (size_t c = 0; c < line.size(); ++c) width[c] = std::max(width[c], line[c].size());
  }
  for (const auto& line : table) {
    std::string out;
    for (size_t c = 0; c < line.size(); ++c) {
      const bool numeric = c >= 4 && c <= 11;
      const std::string pad(width[c] - line[c].size(), ' ');
      if (c > 0) out += "  ";
      out += numeric ? pad + line[c] : (c + 1 == line.size() ? line[c] : line[c] + pad);
    }
    std::printf("%s\n", out.c_str());
  }
  for (const Ratio& r : Ratios(cfg, rows)) {
    std::printf("# ratio %s/%s of the median iters/s, %s %s: %s\n", cfg.policies[0].c_str(),
                cfg.policies[1].c_str(), r.sc->name, PlacementName(r.pl),
                r.ratio ? StrFormat("%.3f", *r.ratio).c_str() : "-");
  }
  for (const Row& row : rows) {
    for (size_t i = 0; i < row.runs.size(); ++i) {
      const CellResult& r = row.runs[i];
      if (r.error_report.empty() && r.hang_report.empty()) continue;
      std::printf("\n--- %s %s %s%s: %s\n", row.sc->name, PlacementName(row.pl), row.policy.c_str(),
                  row.runs.size() > 1 ? StrFormat(" (run %zu)", i + 1).c_str() : "",
                  r.outcome == CellResult::Outcome::kHang ? "HANG" : "FAIL");
      if (!r.error_report.empty()) std::printf("%s\n", r.error_report.c_str());
      if (!r.hang_report.empty()) std::printf("%s", r.hang_report.c_str());
    }
  }
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20) {
          out += StrFormat("\\u%04x", c);
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string JsonNumber(std::optional<double> v) {
  return v && std::isfinite(*v) ? StrFormat("%.3f", *v) : "null";
}

std::string JsonRun(const CellResult& r) {
  const char* outcome = r.outcome == CellResult::Outcome::kOk     ? "ok"
                        : r.outcome == CellResult::Outcome::kHang ? "HANG"
                                                                  : "FAIL";
  return StrFormat(
      "{\"iterations\":%llu,\"elapsed_s\":%.3f,\"iters_per_s\":%s,\"ops\":%llu,\"retries\":%s,"
      "\"retries_per_1k_ops\":%s,\"torn_in_flight\":%llu,\"dropped_pins\":%llu,\"hangs\":%d,"
      "\"errors\":%d,\"result\":\"%s\",\"hang_report\":%s,\"error_report\":%s}",
      static_cast<unsigned long long>(r.iterations), r.elapsed,
      JsonNumber(r.ItersPerSecond()).c_str(), static_cast<unsigned long long>(r.ops),
      r.retries ? std::to_string(*r.retries).c_str() : "null", JsonNumber(r.RetriesPer1k()).c_str(),
      static_cast<unsigned long long>(r.torn_in_flight),
      static_cast<unsigned long long>(r.dropped_pins), r.hangs, r.errors, outcome,
      JsonString(r.hang_report).c_str(), JsonString(r.error_report).c_str());
}

void PrintJson(const Config& cfg, const std::vector<Row>& rows, int exit_code,
               const std::string& fatal) {
  std::string out = "{";
  out += StrFormat("\"size\":%llu,\"duration_s\":%g,\"watchdog_s\":%g,\"seed\":%llu,\"bench\":%d,",
                   static_cast<unsigned long long>(cfg.size), cfg.duration, cfg.watchdog,
                   static_cast<unsigned long long>(cfg.seed), cfg.bench_rounds);
  out += "\"dirs\":[";
  for (size_t i = 0; i < cfg.dirs.size(); ++i) out += (i ? "," : "") + JsonString(cfg.dirs[i]);
  out += "],\"cells\":[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const Rates rates = RowRates(row);
    const bool ran = !row.runs.empty();
    std::string dirs;
    for (const int d : row.dirs) dirs += (dirs.empty() ? "" : ",") + JsonString(cfg.dirs[d]);
    std::string hang_report;
    std::string error_report;
    uint64_t torn = 0;
    for (const CellResult& r : row.runs) {
      torn += r.torn_in_flight;
      hang_report += r.hang_report;
      if (!r.error_report.empty()) error_report += r.error_report + "\n";
    }
    const std::optional<int64_t> retries = row.Retries();
    out += i ? "," : "";
    out += StrFormat(
        "{\"scenario\":\"%s\",\"policy\":%s,\"placement\":\"%s\",\"dirs\":[%s],"
        "\"iterations\":%s,\"iters_per_s\":%s,\"ops\":%s,\"retries\":%s,"
        "\"retries_per_1k_ops\":%s,\"torn_in_flight\":%llu,\"dropped_pins\":%llu,"
        "\"hangs\":%s,\"errors\":%s,\"result\":%s,\"hang_report\":%s,\"error_report\":%s",
        row.sc->name, JsonString(row.policy).c_str(), PlacementName(row.pl), dirs.c_str(),
        ran ? std::to_string(row.Iterations()).c_str() : "null", JsonNumber(rates.iters).c_str(),
        ran ? std::to_string(row.Ops()).c_str() : "null",
        retries ? std::to_string(*retries).c_str() : "null",
        JsonNumber(rates.retries_per_1k).c_str(), static_cast<unsigned long long>(torn),
        static_cast<unsigned long long>(row.DroppedPins()),
        ran ? std::to_string(row.Hangs()).c_str() : "null",
        ran ? std::to_string(row.Errors()).c_str() : "null", JsonString(row.Result()).c_str(),
        JsonString(hang_report).c_str(), JsonString(error_report).c_str());
    if (cfg.bench_rounds > 0) {
      out += StrFormat(
          ",\"iters_per_s_min\":%s,\"iters_per_s_max\":%s,\"runs\":[",
          JsonNumber(rates.iters ? std::optional<double>(rates.min) : std::nullopt).c_str(),
          JsonNumber(rates.iters ? std::optional<double>(rates.max) : std::nullopt).c_str());
      for (size_t k = 0; k < row.runs.size(); ++k) out += (k ? "," : "") + JsonRun(row.runs[k]);
      out += "]";
    }
    out += "}";
  }
  out += "]";
  const std::vector<Ratio> ratios = Ratios(cfg, rows);
  if (!ratios.empty()) {
    out += ",\"ratios\":[";
    for (size_t i = 0; i < ratios.size(); ++i) {
      out += StrFormat(
          "%s{\"scenario\":\"%s\",\"placement\":\"%s\",\"numerator\":%s,"
          "\"denominator\":%s,\"ratio\":%s}",
          i ? "," : "", ratios[i].sc->name, PlacementName(ratios[i].pl),
          JsonString(cfg.policies[0]).c_str(), JsonString(cfg.policies[1]).c_str(),
          JsonNumber(ratios[i].ratio).c_str());
    }
    out += "]";
  }
  if (!fatal.empty()) out += ",\"fatal\":" + JsonString(fatal);
  out += StrFormat(",\"exit\":%d}\n", exit_code);
  std::fputs(out.c_str(), stdout);
}

int Main(int argc, char** argv) {
  const Config cfg = ParseArgs(argc, argv);
  const int rounds = std::max(cfg.bench_rounds, 1);
  std::vector<Row> rows;
  for (const ScenarioDef* sc : cfg.scenarios) {
    for (const Placement pl : cfg.placements) {
      for (const std::string& policy : cfg.policies) {
        Row row{sc, pl, policy, CellDirs(cfg, *sc, pl), {}, "", 0};
        if (pl == Placement::kSpread && cfg.dirs.size() < 2) {
          row.skipped = "skipped(spread needs 2 or more --dir)";
        }
        rows.push_back(row);
      }
    }
  }
  std::vector<bool> hung(cfg.dirs.size(), false);
  std::string fatal;
  uint64_t run_number = 0;
  const size_t npolicies = cfg.policies.size();
  for (size_t group = 0; group < rows.size() && fatal.empty(); group += npolicies) {
    for (int round = 0; round < rounds && fatal.empty(); ++round) {
      for (size_t k = 0; k < npolicies && fatal.empty(); ++k) {
        Row& row = rows[group + k];
        ++run_number;
        if (!row.skipped.empty() && row.runs.empty()) continue;
        const bool blocked = std::any_of(row.dirs.begin(), row.dirs.end(),
                                         [&](int d) { return hung[static_cast<size_t>(d)]; });
        if (blocked) {
          if (row.runs.empty()) {
            row.skipped = "not run (mount hung)";
          } else {
            ++row.rounds_not_run;
          }
          continue;
        }
        CellResult r = RunCell(cfg, *row.sc, row.pl, row.policy, run_number);
        if (!r.fatal.empty()) {
          fatal = r.fatal;
          break;
        }
        if (r.outcome == CellResult::Outcome::kHang) {
          for (const int d : r.dirs) hung[static_cast<size_t>(d)] = true;
        }
        if (r.outcome == CellResult::Outcome::kFail) {
          // A live note; the details are in the report (after the table, or in the JSON).
          std::fprintf(stderr, "FAIL: scenario %s placement %s policy %s: %d error%s\n",
                       row.sc->name, PlacementName(row.pl), row.policy.c_str(), r.errors,
                       r.errors == 1 ? "" : "s");
        }
        row.runs.push_back(std::move(r));
      }
    }
  }
  // Rows never reached because of a fatal error.
  for (Row& row : rows) {
    if (row.runs.empty() && row.skipped.empty()) row.skipped = "not run (fatal error)";
  }
  bool any_error = !fatal.empty();
  bool any_hang = false;
  for (const Row& row : rows) {
    any_error = any_error || row.Errors() > 0;
    any_hang = any_hang || row.Hung();
  }
  const int exit_code = any_error ? kExitFail : any_hang ? kExitHang : 0;
  if (!fatal.empty()) std::fprintf(stderr, "ugfs2-mmap-stress: fatal: %s\n", fatal.c_str());
  if (cfg.json) {
    PrintJson(cfg, rows, exit_code, fatal);
  } else {
    PrintTable(cfg, rows);
  }
  std::fflush(nullptr);
  return exit_code;
}

}  // namespace
}  // namespace ugfs2::mmap_stress

int main(int argc, char** argv) { return ugfs2::mmap_stress::Main(argc, argv); }
