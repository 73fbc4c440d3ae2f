// The parent side: running one cell (a scenario under one policy and one placement) in child
// processes under the watchdog, the external commands (--policy-cmd, --retries-cmd,
// --hang-cmd) with timeouts, and what a cell's run found.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "scenarios.h"

namespace ugfs2::mmap_stress {

enum class Placement { kOne, kSpread };
const char* PlacementName(Placement p);

struct Config {
  std::vector<std::string> dirs;  // canonical paths; dirs[0] holds the files
  std::vector<const ScenarioDef*> scenarios;
  std::vector<Placement> placements;
  std::vector<std::string> policies;
  double duration = 3;
  double watchdog = 20;
  bool json = false;
  int bench_rounds = 0;  // 0: no --bench
  std::string hang_cmd;
  std::string policy_cmd;
  std::string retries_cmd;
  uint64_t size = 1 << 20;
  uint64_t seed = 0;
  std::string inject_stall;  // a scenario name: its worker 1 stops progressing
};

// The dirs of cfg without repetitions, in order.
std::vector<std::string> DistinctDirs(const Config& cfg);

struct CellResult {
  enum class Outcome { kOk, kHang, kFail, kSkipped, kNotRun };
  Outcome outcome = Outcome::kOk;
  std::string reason;              // of kSkipped / kNotRun
  std::vector<int> dirs;           // indices into cfg.dirs the workers used
  uint64_t iterations = 0;         // completed between go and stop
  double elapsed = 0;              // seconds from go to stop (CLOCK_MONOTONIC)
  uint64_t ops = 0;                // the workers' I/O operations, their whole run
  std::optional<int64_t> retries;  // the --retries-cmd delta, summed over the dirs
  uint64_t torn_in_flight = 0;     // S5: torn pages read while a write of them was in flight
  uint64_t dropped_pins = 0;       // reads into a mapping repeated (Worker::PreadIntoMapping)
  int hangs = 0;
  int errors = 0;
  std::string hang_report;
  std::string error_report;
  std::string fatal;  // a command failed: the tool stops

  double ItersPerSecond() const {
    return elapsed > 0 ? static_cast<double>(iterations) / elapsed : 0;
  }
  std::optional<double> RetriesPer1k() const {
    if (!retries || ops == 0) return std::nullopt;
    return static_cast<double>(*retries) * 1000.0 / static_cast<double>(ops);
  }
};

// The index of cfg.dirs that worker i of sc uses with placement pl.
int WorkerDir(const Config& cfg, const ScenarioDef& sc, Placement pl, int i);
// The indices of cfg.dirs that the workers of sc use with placement pl (sorted, distinct).
std::vector<int> CellDirs(const Config& cfg, const ScenarioDef& sc, Placement pl);

// Runs one cell; run_number makes its workers' random streams differ from the other runs'.
CellResult RunCell(const Config& cfg, const ScenarioDef& sc, Placement pl,
                   const std::string& policy, uint64_t run_number);

}  // namespace ugfs2::mmap_stress
