//! The mesh on testnets of real meshd agents in Docker, as scenarios.
//!
//! Needs Docker and the `meshd:testnet` image (`scripts/images`; `scripts/test`
//! builds it). Without either the tests fail, saying so: they never skip.
//! Each test has a testnet of its own, with a unique name, removed when the
//! test ends, panics included.
//!
//! Budgets follow the mesh issue's goals with slack for a loaded CI host:
//! views converge within 10 s of start and a dead agent is noticed within
//! 10 s. The measured times are printed (`cargo test -- --nocapture`).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mesh_testnet::docker::Docker;
use mesh_testnet::{NodeState, SCENARIO_LIMIT, Testnet, TestnetOptions, expect, scenario};

/// From the agents' start to every node seeing every node with its topology.
const CONVERGE: Duration = Duration::from_secs(10);
/// From a kill or partition to every other node marking the lost ones dead.
const DETECT: Duration = Duration::from_secs(10);
/// How long a foreign agent is watched for.
const FOREIGN_WATCH: Duration = Duration::from_secs(10);

async fn five_agents(label: &str) -> Result<Testnet> {
    Testnet::up(TestnetOptions::for_test(label).nodes(5))
        .await
        .context("starting a 5-agent testnet (is Docker running, and did `scripts/images` build meshd:testnet?)")
}

/// Step: every member lists every member alive with its topology, within
/// [`CONVERGE`] of the agents' start.
async fn converged_after_start(net: &Testnet) -> Result<()> {
    let all = net.nodes();
    let budget = CONVERGE.saturating_sub(net.started_at().elapsed());
    net.wait_views(
        "every node lists n1..n5 alive with their topology",
        budget,
        &all,
        expect::alive_with_topology(&all),
    )
    .await?;
    println!(
        "{}: all 5 views converged {:?} after the agents started",
        net.name(),
        net.started_at().elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn five_agents_see_each_other_lose_one_and_get_it_back() -> Result<()> {
    scenario(
        "five_agents_see_each_other_lose_one_and_get_it_back",
        SCENARIO_LIMIT,
        async {
            let net = five_agents("kill").await?;
            let all = net.nodes();
            let others = &all[..4];
            converged_after_start(&net).await?;

            net.kill("n5").await?;
            let n5_dead = expect::dead(&["n5"]);
            let others_alive = expect::alive_with_topology(others);
            let took = net
                .wait_views("n1..n4 mark n5 dead", DETECT, others, |peers| {
                    n5_dead(peers)?;
                    others_alive(peers)
                })
                .await?;
            println!(
                "{}: n5 marked dead by n1..n4 {took:?} after the kill",
                net.name()
            );

            net.restart("n5").await?;
            let took = net
                .wait_views(
                    "every node lists n1..n5 alive again",
                    CONVERGE,
                    &all,
                    expect::alive_with_topology(&all),
                )
                .await?;
            println!(
                "{}: n5 alive everywhere {took:?} after it answered again",
                net.name()
            );

            net.down().await?;
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn a_paused_agent_is_suspect_before_it_is_dead_and_alive_once_thawed() -> Result<()> {
    scenario(
        "a_paused_agent_is_suspect_before_it_is_dead_and_alive_once_thawed",
        SCENARIO_LIMIT,
        async {
            // Suspect after 3 quiet rounds (0.6 s here); a failure detector
            // slower than the default leaves seconds between the two, so a
            // view polled every 200 ms cannot miss the suspect one.
            let options = TestnetOptions::for_test("pause")
                .nodes(3)
                .gossip_interval(Duration::from_millis(200))
                .extra_arg("--phi-threshold")
                .extra_arg("24");
            let net = Testnet::up(options)
                .await
                .context("starting a 3-agent testnet")?;
            let all = net.nodes();
            let others = &all[..2];
            net.wait_views(
                "every node lists n1..n3 alive",
                CONVERGE,
                &all,
                expect::alive_with_topology(&all),
            )
            .await?;
            // Frozen, not gone: the failure detector needs a while to
            // declare it dead; a few quiet rounds make it suspect first.
            net.pause("n3", true).await?;
            let took = net
                .wait_views(
                    "n1, n2 list n3 suspect",
                    DETECT,
                    others,
                    expect::suspect(&["n3"]),
                )
                .await?;
            println!("{}: n3 suspect {took:?} after the pause", net.name());
            let took = net
                .wait_views("n1, n2 list n3 dead", DETECT, others, expect::dead(&["n3"]))
                .await?;
            println!("{}: n3 dead {took:?} after it was suspect", net.name());
            net.pause("n3", false).await?;
            net.wait_views(
                "every node lists n1..n3 alive again",
                CONVERGE,
                &all,
                expect::alive_with_topology(&all),
            )
            .await?;
            net.down().await?;
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn an_agent_with_a_foreign_certificate_never_joins() -> Result<()> {
    scenario(
        "an_agent_with_a_foreign_certificate_never_joins",
        SCENARIO_LIMIT,
        async {
            let mut net = five_agents("foreign").await?;
            let all = net.nodes();
            converged_after_start(&net).await?;

            net.add_foreign("evil").await?;
            // evil runs and serves, so its absence below is a refusal, not a no-show.
            ensure!(
                net.health("evil").await?.ok,
                "the foreign agent is not healthy"
            );
            let evil_absent = expect::absent(&["evil"]);
            let members_alive = expect::alive_with_topology(&all);
            net.hold_views(
                "no member lists evil, and all members stay alive",
                FOREIGN_WATCH,
                &all,
                |peers| {
                    evil_absent(peers)?;
                    members_alive(peers)
                },
            )
            .await?;
            let evil = [net.state().node("evil")?.node.clone()];
            net.check_views(&evil, &expect::alive_with_topology(&["evil"]))
                .await
                .map_err(|why| anyhow::anyhow!("evil should see only itself: {why}"))?;

            net.down().await?;
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn a_2_3_split_and_heal_converge_back_to_one_view() -> Result<()> {
    scenario(
        "a_2_3_split_and_heal_converge_back_to_one_view",
        SCENARIO_LIMIT,
        async {
            let net = five_agents("partition").await?;
            let all = net.nodes();
            let majority = &all[..3];
            converged_after_start(&net).await?;

            // A true split: n4 and n5 still see each other.
            net.split(&["n4", "n5"]).await?;
            let cut_dead = expect::dead(&["n4", "n5"]);
            let majority_alive = expect::alive_with_topology(majority);
            let took = net
                .wait_views("n1..n3 mark n4 and n5 dead", DETECT, majority, |peers| {
                    cut_dead(peers)?;
                    majority_alive(peers)
                })
                .await?;
            println!(
                "{}: n4, n5 marked dead by n1..n3 {took:?} after the split",
                net.name()
            );
            let minority = &all[3..];
            let others_dead = expect::dead(&["n1", "n2", "n3"]);
            let pair_alive = expect::alive_with_topology(minority);
            net.wait_views(
                "n4 and n5 see each other and n1..n3 dead",
                DETECT,
                minority,
                |peers| {
                    others_dead(peers)?;
                    pair_alive(peers)
                },
            )
            .await?;

            net.heal().await?;
            let took = net
                .wait_views(
                    "every node lists n1..n5 alive after the heal",
                    CONVERGE,
                    &all,
                    expect::alive_with_topology(&all),
                )
                .await?;
            println!("{}: one view again {took:?} after the heal", net.name());

            net.down().await?;
            Ok(())
        },
    )
    .await
}

/// The harness itself, independent of gossip: agents answer, kill, partition,
/// heal and restart do what `ls` then shows, `kill` takes the node's
/// containers with it but not another testnet's node of the same name, and
/// dropping the testnet leaves nothing behind.
#[tokio::test]
async fn harness_starts_cuts_restores_and_removes_agents() -> Result<()> {
    scenario(
        "harness_starts_cuts_restores_and_removes_agents",
        SCENARIO_LIMIT,
        async {
            let docker = Docker::new();
            let net = Testnet::up(TestnetOptions::for_test("harness").nodes(3)).await?;
            let name = net.name().clone();
            let dir = net.state_dir().to_owned();
            ensure!(
                dir.join("state.json").exists(),
                "no state.json in {}",
                dir.display()
            );
            for node in net.nodes() {
                let health = net.health(node.as_str()).await?;
                ensure!(health.ok && health.node == node, "{node}: {health:?}");
            }
            ensure_states(&net, &[NodeState::Running; 3]).await?;

            // Containers meshd would have started: labelled with the node, on the
            // testnet network. A node n3 of some other testnet must survive.
            let n3_task = FakeTask::create(&docker, "n3", Some(name.as_str())).await?;
            let n1_task = FakeTask::create(&docker, "n1", Some(name.as_str())).await?;
            let elsewhere = FakeTask::create(&docker, "n3", None).await?;

            ensure!(
                net.kill("n3").await? == 1,
                "kill n3 should remove its one container"
            );
            ensure!(
                !n3_task.exists(&docker).await?,
                "n3's container survived its kill"
            );
            ensure!(
                elsewhere.exists(&docker).await?,
                "kill n3 removed another testnet's n3 container"
            );
            ensure_states(
                &net,
                &[NodeState::Running, NodeState::Running, NodeState::Stopped],
            )
            .await?;

            net.partition(&["n2"]).await?;
            ensure_states(
                &net,
                &[
                    NodeState::Running,
                    NodeState::Partitioned,
                    NodeState::Stopped,
                ],
            )
            .await?;
            ensure!(
                net.health("n2").await.is_err(),
                "n2 answers although cut off"
            );

            let healed = net.heal().await?;
            ensure!(
                healed.len() == 1 && healed[0].as_str() == "n2",
                "healed {healed:?}"
            );
            ensure!(
                net.health("n2").await?.ok,
                "n2 does not answer at its address after the heal"
            );

            net.restart("n3").await?;
            ensure!(
                net.health("n3").await?.ok,
                "n3 does not answer after its restart"
            );
            ensure_states(&net, &[NodeState::Running; 3]).await?;

            drop(net);
            let left = docker
                .run(&[
                    "ps",
                    "-a",
                    "-q",
                    "--filter",
                    &format!("label=mesh.testnet={name}"),
                ])
                .await?;
            ensure!(left.is_empty(), "agents left behind: {left}");
            ensure!(
                !n1_task.exists(&docker).await?,
                "n1's container survived the teardown"
            );
            ensure!(
                docker
                    .run(&["network", "inspect", name.as_str()])
                    .await
                    .is_err(),
                "network {name} left behind"
            );
            ensure!(
                !dir.exists(),
                "state directory {} left behind",
                dir.display()
            );
            ensure!(
                elsewhere.exists(&docker).await?,
                "teardown removed another testnet's container"
            );
            Ok(())
        },
    )
    .await
}

async fn ensure_states(net: &Testnet, want: &[NodeState]) -> Result<()> {
    let got: Vec<NodeState> = net.ls().await?.iter().map(|s| s.state).collect();
    ensure!(got == want, "ls shows {got:?}, expected {want:?}");
    Ok(())
}

/// A stopped container labelled as meshd labels its own, removed on drop.
struct FakeTask {
    id: String,
}

impl FakeTask {
    async fn create(docker: &Docker, node: &str, network: Option<&str>) -> Result<Self> {
        let label = format!("mesh.node={node}");
        let mut args = vec!["create", "--label", label.as_str()];
        if let Some(network) = network {
            args.extend(["--network", network]);
        }
        args.extend(["mesh-busybox:latest", "true"]);
        let id = docker.run(&args).await.context(
            "creating a stand-in task container (did `scripts/images` build mesh-busybox:latest?)",
        )?;
        Ok(Self { id })
    }

    async fn exists(&self, docker: &Docker) -> Result<bool> {
        match docker
            .run(&["inspect", "--format", "{{.Id}}", self.id.as_str()])
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for FakeTask {
    fn drop(&mut self) {
        // Already gone is the usual case.
        let _ = Docker::new().run_blocking(&["rm", "-f", self.id.as_str()]);
    }
}
