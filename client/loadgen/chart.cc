#include "client/loadgen/chart.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace mamba::client::loadgen {
namespace {

namespace fs = std::filesystem;

std::string GnuplotString(const std::string& s) {
  return absl::StrCat("'", absl::StrReplaceAll(s, {{"'", "''"}}), "'");
}

bool HasTerminal(const std::string& gnuplot, const std::string& dir, const char* terminal) {
  // `gnuplot -e "set terminal X"` fails with an error message for an unknown terminal.
  const std::string log = dir + "/probe.log";
  std::string cmd =
      absl::StrCat("'", gnuplot, "' -e 'set terminal ", terminal, "' > '", log, "' 2>&1");
  if (std::system(cmd.c_str()) != 0) return false;
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  return !absl::StrContains(text.str(), "unknown") && !absl::StrContains(text.str(), "rror");
}

absl::Status RunGnuplot(const std::string& gnuplot, const std::string& script,
                        const std::string& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::string arg0 = gnuplot, arg1 = script;
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, gnuplot.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return absl::InternalError(absl::StrCat("cannot run ", gnuplot));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int status = 0;
  for (;;) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return absl::DeadlineExceededError("gnuplot took over 60 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::ifstream in(log);
    std::stringstream text;
    text << in.rdbuf();
    return absl::InternalError(absl::StrCat("gnuplot failed: ", text.str().substr(0, 500)));
  }
  return absl::OkStatus();
}

}  // namespace

std::optional<std::string> FindGnuplot() {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return std::nullopt;
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    const std::string candidate = absl::StrCat(dir, "/gnuplot");
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

absl::Status WriteSweepChart(const std::string& gnuplot, const std::string& parameter,
                             const std::vector<SweepPoint>& points, const std::string& path) {
  char dir_template[] = "/tmp/mamba-loadgen-chart-XXXXXX";
  if (mkdtemp(dir_template) == nullptr)
    return absl::InternalError("cannot create a temporary directory");
  const std::string dir = dir_template;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{dir};

  const std::string data = dir + "/sweep.tsv";
  {
    std::ofstream out(data);
    out << "# value\toutput_tok_s\tttft_p50\tttft_top\ttpot_p50\ttpot_top\n";
    auto top = [](const Distribution& d) {
      return d.percentiles.empty() ? d.max : d.percentiles.back().second;
    };
    for (const SweepPoint& p : points) {
      const Metrics& m = p.metrics;
      out << p.value << '\t' << m.output_throughput << '\t' << m.ttft_ms.median << '\t'
          << top(m.ttft_ms) << '\t' << m.tpot_ms.median << '\t' << top(m.tpot_ms) << '\n';
    }
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", data));
  }
  std::string top_name = "max";
  if (!points.empty() && !points[0].metrics.ttft_ms.percentiles.empty()) {
    top_name = absl::StrCat("p", PercentileKey(points[0].metrics.ttft_ms.percentiles.back().first));
  }
  std::string terminal;
  if (absl::EndsWithIgnoreCase(path, ".png")) {
    terminal = HasTerminal(gnuplot, dir, "pngcairo") ? "pngcairo size 1400,560 font 'sans,11'"
                                                     : "png size 1400,560";
  } else {
    terminal = "svg size 1400,560 font 'sans,11' background rgb 'white'";
  }
  const std::string absolute = fs::absolute(path).string();
  const std::string q = GnuplotString(data);
  std::string script = absl::StrCat(
      "set terminal ", terminal, "\n", "set output ", GnuplotString(absolute), "\n",
      "set datafile separator '\\t'\n", "set multiplot layout 1,2 title ",
      GnuplotString(
          absl::StrCat("mamba-loadgen: sweep over ", parameter, " (labels: ", parameter, ")")),
      "\n", "set grid\nset key top left\nset xlabel 'output throughput (tok/s)'\n",
      "set ylabel 'time to first token (ms)'\n", "plot ", q,
      " using 2:3 with linespoints lw 2 pt 7 title 'TTFT median', ", q,
      " using 2:4 with linespoints lw 2 pt 5 title 'TTFT ", top_name, "', ", q,
      " using 2:4:1 with labels offset 0,1 notitle\n", "set ylabel 'time per output token (ms)'\n",
      "plot ", q, " using 2:5 with linespoints lw 2 pt 7 title 'TPOT median', ", q,
      " using 2:6 with linespoints lw 2 pt 5 title 'TPOT ", top_name, "', ", q,
      " using 2:6:1 with labels offset 0,1 notitle\n", "unset multiplot\n");
  const std::string script_path = dir + "/sweep.gp";
  {
    std::ofstream out(script_path);
    out << script;
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", script_path));
  }
  return RunGnuplot(gnuplot, script_path, dir + "/gnuplot.log");
}

}  // namespace mamba::client::loadgen
