"""A Python gRPC client of `stance serve`, written against the proto file only.

Stubs are generated from proto/stance/v1/stance.proto with grpcio-tools at test time. The
real server binary (STANCE_BIN, default target/release/stance) is started on an ephemeral
port. Run with pytest (see .ci/run).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = (ROOT / "tests" / "fixtures" / "article.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    """stance_pb2 and stance_pb2_grpc, generated from the proto into a temp folder."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    include = str(Path(protoc.__file__).parent / "_proto")
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        str(ROOT / "proto" / "stance" / "v1" / "stance.proto"),
    ])
    assert rc == 0, "protoc failed"
    sys.path.insert(0, str(out))
    from stance.v1 import stance_pb2, stance_pb2_grpc  # noqa: E402

    return stance_pb2, stance_pb2_grpc


@pytest.fixture(scope="session")
def server():
    """The real server on 127.0.0.1 with an ephemeral port; yields its address."""
    binary = os.environ.get("STANCE_BIN", str(ROOT / "target" / "release" / "stance"))
    # The small committed model unless STANCE_TEST_MODEL names another (development only).
    model = os.environ.get("STANCE_TEST_MODEL") or str(ROOT / "models" / "minilm-l6-stance")
    args = [binary, "serve", "--addr", "127.0.0.1:0", "--model", model]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STANCE_") or k == "STANCE_TEST_MODEL"}
    env.setdefault("RUST_LOG", "warn")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, env=env, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on "), f"unexpected first line {first!r}"
        addr = first[len("listening on "):]
        with grpc.insecure_channel(addr) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            deadline = time.time() + 60
            while True:
                try:
                    r = health.Check(health_pb2.HealthCheckRequest(service="stance.v1.Stance"), timeout=5)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert time.time() < deadline, "server not SERVING within 60 s"
                time.sleep(0.05)
        yield addr
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, "the server did not exit 0 on SIGTERM"


@pytest.fixture()
def channel(server):
    with grpc.insecure_channel(server) as ch:
        yield ch


def test_health(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ["", "stance.v1.Stance"]:
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_services(channel):
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "stance.v1.Stance" in services
    assert "grpc.health.v1.Health" in services


def test_score_article(stubs, channel):
    pb, pb_grpc = stubs
    stub = pb_grpc.StanceStub(channel)
    r = stub.ScoreArticle(pb.ScoreArticleRequest(article=pb.Article(id="article.txt", text=FIXTURE)), timeout=60)
    s = r.score
    assert s.id == "article.txt"
    assert s.model.name == "minilm-l6-stance"
    assert len(s.sentences) > 5
    raw = FIXTURE.encode("utf-8")
    for i, sent in enumerate(s.sentences):
        assert sent.index == i
        assert raw[sent.start:sent.end].decode("utf-8") == sent.text
        assert FIXTURE[sent.char_start:sent.char_end] == sent.text
        p = sent.sentiment
        assert abs(p.negative + p.neutral + p.positive - 1) < 1e-4
        assert abs(p.score - (p.positive - p.negative)) < 1e-5
        for a in sent.actors:
            for m in a.mentions:
                assert FIXTURE[m.char_start:m.char_end] == m.text
    actors = {a.actor for a in s.actors}
    assert {"Russia", "Turkey", "Armenia", "Azerbaijan"} <= actors
    assert s.sentiment.label in (pb.LABEL_NEGATIVE, pb.LABEL_NEUTRAL, pb.LABEL_POSITIVE)

    # No actors at all ("set but empty" differs from "unset").
    r = stub.ScoreArticle(pb.ScoreArticleRequest(article=pb.Article(id="n", text=FIXTURE, actors=pb.ActorSet())), timeout=60)
    assert len(r.score.actors) == 0

    # Bad input: INVALID_ARGUMENT with the reason.
    with pytest.raises(grpc.RpcError) as e:
        stub.ScoreArticle(pb.ScoreArticleRequest(article=pb.Article(id="e", text="")), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in e.value.details()


def test_score_articles_stream(stubs, channel):
    pb, pb_grpc = stubs
    stub = pb_grpc.StanceStub(channel)
    texts = [FIXTURE[:200], "", FIXTURE[:400], FIXTURE]

    def requests():
        for i, t in enumerate(texts):
            yield pb.ScoreArticleRequest(article=pb.Article(id=f"p{i}", text=t), seq=i)

    got = {item.id: item for item in stub.ScoreArticles(requests(), timeout=120)}
    assert sorted(got) == ["p0", "p1", "p2", "p3"]
    assert got["p1"].WhichOneof("result") == "error"
    assert got["p1"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    for i in (0, 2, 3):
        item = got[f"p{i}"]
        assert item.WhichOneof("result") == "score", item
        assert item.seq == i
        assert len(item.score.sentences) > 0


def test_list_actors_and_model_info(stubs, channel):
    pb, pb_grpc = stubs
    stub = pb_grpc.StanceStub(channel)
    names = [a.name for a in stub.ListActors(pb.ListActorsRequest(), timeout=10).actors]
    assert names == ["Russia", "Turkey", "Armenia", "Azerbaijan"]
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert info.name == "minilm-l6-stance"
    assert list(info.labels) == ["negative", "neutral", "positive"]
    assert json.loads(info.manifest_json)["name"] == "minilm-l6-stance"
