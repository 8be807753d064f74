// The real mamba-server binary on 127.0.0.1 with ephemeral ports: the bundled demo model gives
// its reference text, SIGTERM drains (finishing or, after the timeout, cancelling running
// requests, exit code 0), a disconnected client's slot is freed (visible in /metrics), and a
// missing or corrupt model directory fails at start-up with a clear error and a non-zero exit.
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/http_client.h"
#include "tests/support/server_process.h"
#include "tests/support/wait_for.h"

namespace mamba::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

const char* kReference =
    " unto him, Go, and let us go.\nAnd he said unto him, Go, and say, I will not be a man of the";

// Opens a streaming completion on a raw socket and waits for its first bytes; returns the fd.
int StartStream(int port, int max_tokens) {
  const int fd = Connect(port);
  if (fd < 0) return -1;
  const std::string body = json{
      {"prompt", "And God said"},
      {"max_tokens", max_tokens},
      {"temperature", 0},
      {"stream", true},
      {"ignore_eos", true}}.dump();
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  char buf[4096];
  if (recv(fd, buf, sizeof(buf), 0) <= 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Reads until the peer closes or [DONE] arrives (bounded); returns everything read.
std::string ReadRest(int fd, std::chrono::seconds timeout) {
  std::string all;
  const auto end = std::chrono::steady_clock::now() + timeout;
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[65536];
  while (std::chrono::steady_clock::now() < end) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n > 0) all.append(buf, static_cast<size_t>(n));
    if (all.find("data: [DONE]") != std::string::npos) break;
  }
  return all;
}

TEST(ServerBinary, DemoModelGivesItsReferenceText) {
  auto server = ServerProcess::Start({"--dtype", "float32"});
  ASSERT_TRUE(server);
  auto health = HttpRequest(server->http_port(), "GET", "/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto r =
      HttpRequest(server->http_port(), "POST", "/v1/completions",
                  json{{"prompt", "And God said"}, {"max_tokens", 30}, {"temperature", 0}}.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["choices"][0]["text"], kReference);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(j["usage"]["completion_tokens"], 30);
  EXPECT_NE(server->Log().find("DEMO model"), std::string::npos)
      << "the demo model must be announced";
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(ServerBinary, SigtermDrainsRunningRequestsAndRefusesNewOnes) {
  auto server = ServerProcess::Start({"--drain-timeout", "60"});
  ASSERT_TRUE(server);
  // Long enough (seconds) that the drain is still running while we probe health.
  const int fd = StartStream(server->http_port(), 4000);
  ASSERT_GE(fd, 0);
  kill(server->pid(), SIGTERM);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto h = HttpRequest(server->http_port(), "GET", "/health", "", {}, 2s);
        return h && h->status == 503;
      },
      10s))
      << "health must turn 503 while draining; server log:\n"
      << server->Log();
  auto refused = HttpRequest(server->http_port(), "POST", "/v1/completions",
                             json{{"prompt", "x"}, {"max_tokens", 2}}.dump(), {}, 10s);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  const std::string rest = ReadRest(fd, 60s);
  close(fd);
  EXPECT_NE(rest.find("\"finish_reason\":\"length\""), std::string::npos)
      << "the running stream must finish; it ended with:\n"
      << rest.substr(rest.size() > 600 ? rest.size() - 600 : 0);
  EXPECT_NE(rest.find("data: [DONE]"), std::string::npos);
  EXPECT_EQ(server->Terminate(), 0);
  if (::testing::Test::HasFailure()) ADD_FAILURE() << "server log:\n" << server->Log();
  EXPECT_NE(server->Log().find("drained"), std::string::npos);
}

TEST(ServerBinary, DrainTimeoutCancelsWhatIsLeftAndStillExitsZero) {
  auto server = ServerProcess::Start({"--drain-timeout", "0.5"});
  ASSERT_TRUE(server);
  const int fd = StartStream(server->http_port(), 16000);
  ASSERT_GE(fd, 0);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(server->Terminate(30s), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);
  close(fd);
  EXPECT_NE(server->Log().find("drain timeout"), std::string::npos) << server->Log();
}

TEST(ServerBinary, DisconnectedClientFreesItsSlot) {
  auto server = ServerProcess::Start({"--slots", "2"});
  ASSERT_TRUE(server);
  const int fd = StartStream(server->http_port(), 16000);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(
      WaitFor([&] { return Metric(server->http_port(), "mamba_state_slots_used") == 1; }, 10s));
  close(fd);
  EXPECT_TRUE(
      WaitFor([&] { return Metric(server->http_port(), "mamba_state_slots_used") == 0; }, 10s))
      << "the slot of a client that went away must be freed";
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(ServerBinary, MissingOrCorruptModelFailsClearly) {
  {
    auto server = ServerProcess::Start({"--model", "/nonexistent/model"}, 30s);
    EXPECT_FALSE(server) << "must not start";
  }
  const fs::path dir = fs::temp_directory_path() / ("mamba-corrupt-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const char* src = std::getenv("MAMBA_SOURCE_DIR");
  const fs::path model = fs::path(src ? src : ".") / "models/kjv-mamba-4x192";
  fs::copy(model, dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  fs::resize_file(dir / "model.safetensors", 1000000);
  // Run directly to see the exit code and the message.
  const std::string cmd = BinaryPath("mamba-server").string() +
                          " --http-port 0 --grpc-port 0 --model " + dir.string() + " > " +
                          (dir / "log").string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(dir / "log");
  const std::string log((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(rc, 0);
  EXPECT_NE(log.find("model.safetensors"), std::string::npos) << log;
  fs::remove_all(dir);
}

TEST(ServerBinary, JsonLogLinesAlwaysParse) {
  auto server = ServerProcess::Start({"--log-json", "--model-name", "quote\"and\\back"});
  ASSERT_TRUE(server);
  auto r = HttpRequest(server->http_port(), "GET", "/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(server->Terminate(), 0);
  std::istringstream in(server->Log());
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    ++lines;
    const json j = json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << "not JSON: " << line;
    EXPECT_TRUE(j.contains("msg") && j.contains("level")) << line;
  }
  EXPECT_GE(lines, 3);
}

TEST(ServerBinary, BadFlagsExitWithUsageError) {
  const std::string bin = BinaryPath("mamba-server").string();
  EXPECT_NE(std::system((bin + " --slots abc > /dev/null 2>&1").c_str()), 0);
  EXPECT_NE(std::system((bin + " --tls-cert only.pem > /dev/null 2>&1").c_str()), 0);
  EXPECT_NE(std::system((bin + " --slots -1 > /dev/null 2>&1").c_str()), 0);
  EXPECT_NE(std::system((bin + " --http-idle-timeout 0 > /dev/null 2>&1").c_str()), 0);
}

// An unknown --dtype and an int8 group size that is not a multiple of 4 are refused at start-up
// with a message naming the flag and the accepted values.
TEST(ServerBinary, BadDtypeFlagsAreNamed) {
  const fs::path log = fs::temp_directory_path() / ("mamba-dtype-" + std::to_string(getpid()));
  auto run = [&](const std::string& flags) {
    const std::string cmd = BinaryPath("mamba-server").string() + " --http-port 0 --grpc-port 0 " +
                            flags + " > " + log.string() + " 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream in(log);
    std::string out((std::istreambuf_iterator<char>(in)), {});
    EXPECT_NE(rc, 0) << flags << ": " << out;
    return out;
  };
  const std::string int4 = run("--dtype int4");
  EXPECT_NE(int4.find("int4"), std::string::npos) << int4;
  EXPECT_NE(int4.find("int8"), std::string::npos) << int4;  // the accepted values are listed
  const std::string group = run("--dtype int8 --int8-group-size 6");
  EXPECT_NE(group.find("--int8-group-size"), std::string::npos) << group;
  EXPECT_NE(group.find("multiple of 4"), std::string::npos) << group;
  fs::remove(log);
}

// An unknown --log-level is refused at start-up (usage error, exit code 2) with a message that
// lists the valid levels, rather than turning logging off.
TEST(ServerBinary, UnknownLogLevelIsAUsageError) {
  const fs::path log = fs::temp_directory_path() / ("mamba-loglevel-" + std::to_string(getpid()));
  const std::string cmd = BinaryPath("mamba-server").string() +
                          " --http-port 0 --grpc-port 0 --log-level verbose > " + log.string() +
                          " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(log);
  const std::string out((std::istreambuf_iterator<char>(in)), {});
  fs::remove(log);
  ASSERT_TRUE(WIFEXITED(rc)) << rc;
  EXPECT_EQ(WEXITSTATUS(rc), 2) << out;
  EXPECT_NE(out.find("--log-level"), std::string::npos) << out;
  EXPECT_NE(out.find("verbose"), std::string::npos) << out;
  for (const char* level : {"trace", "debug", "info", "warn", "error"}) {
    EXPECT_NE(out.find(level), std::string::npos) << level << " missing from: " << out;
  }
}

TEST(ServerBinary, ZeroSlotsMeansAutomatic) {
  auto server = ServerProcess::Start({"--slots", "0"});
  ASSERT_TRUE(server);
  EXPECT_EQ(Metric(server->http_port(), "mamba_state_slots_total"), 16)
      << "the CPU engine's automatic count";
  EXPECT_EQ(server->Terminate(), 0);
}

}  // namespace
}  // namespace mamba::testing
