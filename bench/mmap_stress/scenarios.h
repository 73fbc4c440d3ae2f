// The scenarios S1..S7: what the helper creates before a cell, what each of the two workers
// does, and what the helper checks afterwards through every directory the cell used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "worker.h"

namespace ugfs2::mmap_stress {

struct ScenarioDef {
  const char* name;   // "S1"
  const char* title;  // one line for the usage text
  // 64-bit words of the shared region the scenario needs (beyond the slots).
  size_t (*shared_words)(uint64_t size);
  // In the helper: creates the scenario's files in the (fresh, empty) subdirectory.
  void (*setup)(Worker& w);
  // In a worker: opens and maps, Ready(), loops until Stopped(), final verification, Finish().
  void (*run)(Worker& w);
  // In the helper, after the workers: the invariants of the files, through w.ctx().dir.
  void (*check)(Worker& w);
  // With placement spread, worker i uses --dir i % ndirs; swapped, worker 0 uses DIR2 and worker 1
  // DIR1 (S5: its writer on the node that did not create the file).
  bool swap_dirs;
};

const std::vector<ScenarioDef>& AllScenarios();
const ScenarioDef* FindScenario(const std::string& name);  // "S1" or "s1"

// In the helper: (re)creates the empty subdirectory of a cell, and removes it.
void MakeSubdir(Worker& w);
void RemoveSubdir(Worker& w);

}  // namespace ugfs2::mmap_stress
