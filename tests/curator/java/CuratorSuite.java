// Apache Curator 5.4 (Debian) against a ZooKeeper-protocol server: one JVM runs every scenario named on
// its command line and prints one line per scenario, "RESULT <name> PASS" or "RESULT <name> FAIL <why>".
//
//   java -cp CLASSPATH:CLASSES CuratorSuite 127.0.0.1:2181 crud transaction curator_cache ...
//
// Each scenario works below its own path (/curator-suite/<name>), on its own clients, and checks
// behaviour (what a Curator user relies on), never timings. Left out: the leader kill -9 and the
// mixed-fleet scenarios, which need the harness between steps (CuratorDriver does those).

import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;

import org.apache.curator.framework.*;
import org.apache.curator.framework.api.transaction.*;
import org.apache.curator.framework.recipes.atomic.*;
import org.apache.curator.framework.recipes.cache.*;
import org.apache.curator.framework.recipes.leader.*;
import org.apache.curator.framework.recipes.locks.*;
import org.apache.curator.framework.recipes.nodes.*;
import org.apache.curator.framework.recipes.shared.*;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.curator.utils.ZKPaths;
import org.apache.curator.x.discovery.*;
import org.apache.curator.x.discovery.details.JsonInstanceSerializer;
import org.apache.curator.x.discovery.strategies.RoundRobinStrategy;
import org.apache.zookeeper.*;
import org.apache.zookeeper.data.Stat;

@SuppressWarnings({"rawtypes", "unchecked"})
public class CuratorSuite {
    static String connect;
    static final List<AutoCloseable> open = new ArrayList<>();
    static final long WAIT_MS = 15000;

    static class Check extends RuntimeException {
        Check(String m) { super(m); }
    }

    static void check(boolean cond, String what) {
        if (!cond) throw new Check(what);
    }

    static <T> void eq(T expected, T actual, String what) {
        if (!Objects.equals(expected, actual))
            throw new Check(what + ": expected " + expected + ", got " + actual);
    }

    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }
    static String s(byte[] b) { return b == null ? null : new String(b, StandardCharsets.UTF_8); }

    static CuratorFramework client() throws Exception {
        CuratorFramework c = CuratorFrameworkFactory.builder()
            .connectString(connect)
            .sessionTimeoutMs(6000)
            .connectionTimeoutMs(5000)
            .retryPolicy(new ExponentialBackoffRetry(100, 6))
            .build();
        c.start();
        check(c.blockUntilConnected(20, TimeUnit.SECONDS), "client did not connect to " + connect);
        open.add(c);
        return c;
    }

    /** The children of a node; none if it is gone (Curator makes lock and service parents containers,
     *  which the server may delete as soon as they are empty: ZooKeeper after its container check
     *  interval, Roster sooner). */
    static List<String> children(CuratorFramework c, String p) throws Exception {
        try {
            return c.getChildren().forPath(p);
        } catch (KeeperException.NoNodeException gone) {
            return Collections.emptyList();
        }
    }

    /** Waits until cond holds (bounded by WAIT_MS); fails with what. */
    static void waitFor(String what, Callable<Boolean> cond) throws Exception {
        long deadline = System.currentTimeMillis() + WAIT_MS;
        while (System.currentTimeMillis() < deadline) {
            if (cond.call()) return;
            Thread.sleep(20);
        }
        throw new Check("timed out waiting for " + what);
    }

    /** Takes events from q until one matches, bounded. */
    static String expect(BlockingQueue<String> q, String event) throws Exception {
        long deadline = System.currentTimeMillis() + WAIT_MS;
        List<String> seen = new ArrayList<>();
        while (true) {
            long left = deadline - System.currentTimeMillis();
            String e = left > 0 ? q.poll(left, TimeUnit.MILLISECONDS) : null;
            if (e == null) throw new Check("no event " + event + " (saw " + seen + ")");
            if (e.equals(event)) return e;
            seen.add(e);
        }
    }

    // ------------------------------------------------------------------ scenarios

    static void crud(String base) throws Exception {
        CuratorFramework c = client();
        String p = c.create().creatingParentsIfNeeded().forPath(base + "/a/b", b("v1"));
        eq(base + "/a/b", p, "created path");
        eq("v1", s(c.getData().forPath(p)), "data");
        Stat st = c.checkExists().forPath(p);
        check(st != null && st.getVersion() == 0, "stat version 0");
        Stat st2 = c.setData().withVersion(0).forPath(p, b("v2"));
        eq(1, st2.getVersion(), "version after set");
        try {
            c.setData().withVersion(0).forPath(p, b("v3"));
            throw new Check("set with a stale version succeeded");
        } catch (KeeperException.BadVersionException expected) { }
        try {
            c.create().forPath(p);
            throw new Check("second create succeeded");
        } catch (KeeperException.NodeExistsException expected) { }
        try {
            c.getData().forPath(base + "/missing");
            throw new Check("read of a missing node succeeded");
        } catch (KeeperException.NoNodeException expected) { }
        String e = c.create().withMode(CreateMode.EPHEMERAL).forPath(base + "/a/eph", b("e"));
        eq(c.getZookeeperClient().getZooKeeper().getSessionId(), c.checkExists().forPath(e).getEphemeralOwner(), "ephemeral owner");
        String s1 = c.create().withMode(CreateMode.PERSISTENT_SEQUENTIAL).forPath(base + "/a/seq-");
        String s2 = c.create().withMode(CreateMode.PERSISTENT_SEQUENTIAL).forPath(base + "/a/seq-");
        check(s1.matches(".*/seq-\\d{10}") && s2.compareTo(s1) > 0, "sequential names " + s1 + " " + s2);
        String prot = c.create().withProtection().withMode(CreateMode.EPHEMERAL_SEQUENTIAL).forPath(base + "/a/p-", b("x"));
        check(prot.contains("/_c_") && prot.matches(".*-p-\\d{10}"), "protected name " + prot);
        c.createContainers(base + "/cont/x");
        check(c.checkExists().forPath(base + "/cont") != null, "container created");
        String ttl = c.create().withTtl(60000).withMode(CreateMode.PERSISTENT_WITH_TTL).forPath(base + "/a/ttl", b("t"));
        eq("t", s(c.getData().forPath(ttl)), "ttl node data");
        List<String> kids = c.getChildren().forPath(base + "/a");
        Collections.sort(kids);
        check(kids.containsAll(Arrays.asList("b", "eph", "ttl")) && kids.size() == 6, "children " + kids);
        c.delete().guaranteed().deletingChildrenIfNeeded().forPath(base + "/a");
        check(c.checkExists().forPath(base + "/a") == null, "deleted recursively");
        // a second session sees the first one's ephemerals go with it
        CuratorFramework d = client();
        String e2 = d.create().creatingParentsIfNeeded().withMode(CreateMode.EPHEMERAL).forPath(base + "/gone", b("e"));
        d.close();
        waitFor("ephemeral of a closed session removed", () -> c.checkExists().forPath(e2) == null);
    }

    static void transaction(String base) throws Exception {
        CuratorFramework c = client();
        c.create().creatingParentsIfNeeded().forPath(base + "/x", b("0"));
        c.create().forPath(base + "/old", b("o"));
        List<CuratorTransactionResult> r = c.transaction().forOperations(
            c.transactionOp().create().forPath(base + "/y", b("y")),
            c.transactionOp().setData().withVersion(0).forPath(base + "/x", b("1")),
            c.transactionOp().check().withVersion(1).forPath(base + "/x"),
            c.transactionOp().delete().forPath(base + "/old"));
        eq(4, r.size(), "results");
        eq(OperationType.CREATE, r.get(0).getType(), "first result type");
        eq(base + "/y", r.get(0).getResultPath(), "created path");
        eq(1, r.get(1).getResultStat().getVersion(), "set version");
        eq("1", s(c.getData().forPath(base + "/x")), "x after commit");
        check(c.checkExists().forPath(base + "/old") == null, "old deleted");
        try {
            c.transaction().forOperations(
                c.transactionOp().create().forPath(base + "/z"),
                c.transactionOp().check().withVersion(7).forPath(base + "/x"));
            throw new Check("transaction with a failing check committed");
        } catch (KeeperException.BadVersionException expected) { }
        check(c.checkExists().forPath(base + "/z") == null, "failed transaction left nothing");
    }

    static void curator_cache(String base) throws Exception {
        CuratorFramework c = client();
        c.create().creatingParentsIfNeeded().forPath(base + "/root/pre", b("p"));
        BlockingQueue<String> q = new LinkedBlockingQueue<>();
        CountDownLatch init = new CountDownLatch(1);
        CuratorCache cache = CuratorCache.build(c, base + "/root");
        open.add(cache);
        cache.listenable().addListener(CuratorCacheListener.builder()
            .forAll((type, old, data) -> {
                ChildData d = data != null ? data : old;
                q.add(type + " " + d.getPath().substring(base.length()) + (data != null ? " " + s(data.getData()) : ""));
            })
            .forInitialized(init::countDown)
            .build());
        cache.start();
        check(init.await(WAIT_MS, TimeUnit.MILLISECONDS), "cache initialized");
        expect(q, "NODE_CREATED /root/pre p");
        c.create().creatingParentsIfNeeded().forPath(base + "/root/a/deep", b("d"));
        expect(q, "NODE_CREATED /root/a/deep d");
        c.setData().forPath(base + "/root/a/deep", b("d2"));
        expect(q, "NODE_CHANGED /root/a/deep d2");
        c.delete().forPath(base + "/root/a/deep");
        expect(q, "NODE_DELETED /root/a/deep");
        waitFor("cache content", () -> cache.get(base + "/root/pre").map(d -> "p".equals(s(d.getData()))).orElse(false)
            && !cache.get(base + "/root/a/deep").isPresent());
        cache.close();
    }

    static void path_children_cache(String base) throws Exception {
        CuratorFramework c = client();
        c.create().creatingParentsIfNeeded().forPath(base + "/kids/one", b("1"));
        BlockingQueue<String> q = new LinkedBlockingQueue<>();
        PathChildrenCache cache = new PathChildrenCache(c, base + "/kids", true);
        open.add(cache);
        cache.getListenable().addListener((cl, ev) -> {
            ChildData d = ev.getData();
            q.add(ev.getType() + (d == null ? "" : " " + ZKPaths.getNodeFromPath(d.getPath()) + " " + s(d.getData())));
        });
        cache.start(PathChildrenCache.StartMode.POST_INITIALIZED_EVENT);
        expect(q, "CHILD_ADDED one 1");
        expect(q, "INITIALIZED");
        c.create().forPath(base + "/kids/two", b("2"));
        expect(q, "CHILD_ADDED two 2");
        c.setData().forPath(base + "/kids/one", b("1b"));
        expect(q, "CHILD_UPDATED one 1b");
        c.delete().forPath(base + "/kids/two");
        expect(q, "CHILD_REMOVED two 2");
        eq(1, cache.getCurrentData().size(), "cached children");
        cache.close();
    }

    static void node_cache(String base) throws Exception {
        CuratorFramework c = client();
        String p = base + "/node";
        NodeCache cache = new NodeCache(c, p);
        open.add(cache);
        BlockingQueue<String> q = new LinkedBlockingQueue<>();
        cache.getListenable().addListener(() -> {
            ChildData d = cache.getCurrentData();
            q.add(d == null ? "gone" : s(d.getData()));
        });
        cache.start(true);
        check(cache.getCurrentData() == null, "no data before create");
        c.create().creatingParentsIfNeeded().forPath(p, b("a"));
        expect(q, "a");
        c.setData().forPath(p, b("b"));
        expect(q, "b");
        c.delete().forPath(p);
        expect(q, "gone");
        c.create().forPath(p, b("c"));
        expect(q, "c");
        cache.close();
    }

    static void persistent_watch(String base) throws Exception {
        CuratorFramework c = client();
        c.create().creatingParentsIfNeeded().forPath(base + "/w");
        BlockingQueue<String> q = new LinkedBlockingQueue<>();
        Watcher w = ev -> {
            if (ev.getType() != Watcher.Event.EventType.None)
                q.add(ev.getType() + " " + ev.getPath().substring(base.length()));
        };
        c.watchers().add().withMode(AddWatchMode.PERSISTENT_RECURSIVE).usingWatcher(w).forPath(base + "/w");
        c.create().forPath(base + "/w/a", b("1"));
        expect(q, "NodeCreated /w/a");
        c.create().forPath(base + "/w/a/b", b("2"));
        expect(q, "NodeCreated /w/a/b");
        c.setData().forPath(base + "/w/a/b", b("3"));
        expect(q, "NodeDataChanged /w/a/b");
        c.setData().forPath(base + "/w/a/b", b("4"));  // persistent: fires again without re-arming
        expect(q, "NodeDataChanged /w/a/b");
        c.delete().forPath(base + "/w/a/b");
        expect(q, "NodeDeleted /w/a/b");
        c.watchers().remove(w).ofType(Watcher.WatcherType.Any).forPath(base + "/w");
        c.create().forPath(base + "/w/after", b("x"));
        c.sync().forPath(base + "/w");
        c.getData().forPath(base + "/w/after");
        String late = q.poll(300, TimeUnit.MILLISECONDS);
        check(late == null || late.startsWith("DataWatchRemoved") || late.startsWith("PersistentWatchRemoved"),
              "event after the watch was removed: " + late);
    }

    static void leader_latch(String base) throws Exception {
        String p = base + "/latch";
        List<LeaderLatch> latches = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            LeaderLatch l = new LeaderLatch(client(), p, "p" + i);
            open.add(l);
            l.start();
            latches.add(l);
            // start in order: each waits until its node is in line, so the line is p0, p1, p2
            int n = i + 1;
            waitFor("latch p" + i + " in line", () -> l.getParticipants().size() == n);
        }
        check(latches.get(0).await(WAIT_MS, TimeUnit.MILLISECONDS), "first latch leads");
        waitFor("one leader, three participants", () -> {
            int leaders = 0;
            for (LeaderLatch l : latches) if (l.hasLeadership()) leaders++;
            return leaders == 1 && latches.get(2).getParticipants().size() == 3;
        });
        eq("p0", latches.get(1).getLeader().getId(), "leader seen by another participant");
        check(latches.get(0).getOurPath().contains("latch-"), "latch node name " + latches.get(0).getOurPath());
        latches.get(0).close();
        check(latches.get(1).await(WAIT_MS, TimeUnit.MILLISECONDS), "second latch leads after the first closes");
        check(!latches.get(2).hasLeadership(), "third does not lead");
        eq("p1", latches.get(2).getLeader().getId(), "new leader");
        latches.get(1).close();
        check(latches.get(2).await(WAIT_MS, TimeUnit.MILLISECONDS), "third leads");
        latches.get(2).close();
    }

    static void leader_selector(String base) throws Exception {
        String p = base + "/selector";
        AtomicInteger leading = new AtomicInteger();
        AtomicInteger maxLeading = new AtomicInteger();
        ConcurrentLinkedQueue<String> turns = new ConcurrentLinkedQueue<>();
        List<LeaderSelector> sels = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            String id = "s" + i;
            LeaderSelector s = new LeaderSelector(client(), p, new LeaderSelectorListenerAdapter() {
                public void takeLeadership(CuratorFramework cf) throws Exception {
                    int now = leading.incrementAndGet();
                    maxLeading.accumulateAndGet(now, Math::max);
                    turns.add(id);
                    Thread.sleep(50);
                    leading.decrementAndGet();
                }
            });
            s.setId(id);
            s.autoRequeue();
            open.add(s);
            sels.add(s);
        }
        for (LeaderSelector s : sels) s.start();
        waitFor("nine turns of leadership", () -> turns.size() >= 9);
        for (LeaderSelector s : sels) s.close();
        eq(1, maxLeading.get(), "most leaders at once");
        check(new HashSet<>(turns).size() == 3, "every selector led: " + turns);
    }

    static void mutex(String base) throws Exception {
        String p = base + "/mutex";
        AtomicInteger holders = new AtomicInteger();
        AtomicInteger maxHolders = new AtomicInteger();
        AtomicInteger done = new AtomicInteger();
        List<Thread> threads = new ArrayList<>();
        List<Throwable> errors = Collections.synchronizedList(new ArrayList<>());
        for (int i = 0; i < 4; i++) {
            CuratorFramework c = client();
            Thread t = new Thread(() -> {
                try {
                    InterProcessMutex m = new InterProcessMutex(c, p);
                    for (int k = 0; k < 3; k++) {
                        check(m.acquire(WAIT_MS, TimeUnit.MILLISECONDS), "acquire");
                        check(m.acquire(WAIT_MS, TimeUnit.MILLISECONDS), "re-entrant acquire");
                        maxHolders.accumulateAndGet(holders.incrementAndGet(), Math::max);
                        Thread.sleep(10);
                        holders.decrementAndGet();
                        m.release();
                        m.release();
                        done.incrementAndGet();
                    }
                } catch (Throwable e) { errors.add(e); }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) t.join(4 * WAIT_MS);
        check(errors.isEmpty(), "errors: " + errors);
        eq(12, done.get(), "critical sections");
        eq(1, maxHolders.get(), "most holders at once");
        eq(0, children(client(), p).size(), "lock nodes left");
        // a read-write lock: two readers together, the writer alone
        InterProcessReadWriteLock rw1 = new InterProcessReadWriteLock(client(), base + "/rw");
        InterProcessReadWriteLock rw2 = new InterProcessReadWriteLock(client(), base + "/rw");
        check(rw1.readLock().acquire(WAIT_MS, TimeUnit.MILLISECONDS), "reader 1");
        AtomicBoolean r2 = new AtomicBoolean(), w2 = new AtomicBoolean();
        Thread t = new Thread(() -> {
            try {
                r2.set(rw2.readLock().acquire(WAIT_MS, TimeUnit.MILLISECONDS));
                rw2.readLock().release();
                w2.set(rw2.writeLock().acquire(300, TimeUnit.MILLISECONDS));
                if (w2.get()) rw2.writeLock().release();
            } catch (Exception e) { errors.add(e); }
        });
        t.start();
        t.join(2 * WAIT_MS);
        check(r2.get(), "second reader shares the lock");
        check(!w2.get(), "writer got the lock while a reader held it");
        rw1.readLock().release();
    }

    static void semaphore(String base) throws Exception {
        String p = base + "/sem";
        AtomicInteger inside = new AtomicInteger();
        AtomicInteger maxInside = new AtomicInteger();
        AtomicInteger done = new AtomicInteger();
        List<Throwable> errors = Collections.synchronizedList(new ArrayList<>());
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            CuratorFramework c = client();
            Thread t = new Thread(() -> {
                try {
                    InterProcessSemaphoreV2 sem = new InterProcessSemaphoreV2(c, p, 2);
                    for (int k = 0; k < 3; k++) {
                        Lease l = sem.acquire(WAIT_MS, TimeUnit.MILLISECONDS);
                        check(l != null, "lease");
                        maxInside.accumulateAndGet(inside.incrementAndGet(), Math::max);
                        Thread.sleep(30);
                        inside.decrementAndGet();
                        sem.returnLease(l);
                        done.incrementAndGet();
                    }
                } catch (Throwable e) { errors.add(e); }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) t.join(4 * WAIT_MS);
        check(errors.isEmpty(), "errors: " + errors);
        eq(12, done.get(), "leases taken");
        check(maxInside.get() <= 2, "more than 2 leases at once: " + maxInside.get());
        InterProcessSemaphoreMutex sm1 = new InterProcessSemaphoreMutex(client(), base + "/semmutex");
        InterProcessSemaphoreMutex sm2 = new InterProcessSemaphoreMutex(client(), base + "/semmutex");
        check(sm1.acquire(WAIT_MS, TimeUnit.MILLISECONDS), "semaphore mutex 1");
        check(!sm2.acquire(300, TimeUnit.MILLISECONDS), "semaphore mutex 2 while 1 holds");
        sm1.release();
        check(sm2.acquire(WAIT_MS, TimeUnit.MILLISECONDS), "semaphore mutex 2 after release");
        sm2.release();
    }

    static void shared_counters(String base) throws Exception {
        List<SharedCount> counts = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            SharedCount sc = new SharedCount(client(), base + "/count", 0);
            open.add(sc);
            sc.start();
            counts.add(sc);
        }
        int total = 0;
        for (int round = 0; round < 5; round++) {
            for (SharedCount sc : counts) {
                while (true) {
                    VersionedValue<Integer> v = sc.getVersionedValue();
                    if (sc.trySetCount(v, v.getValue() + 1)) break;
                }
                total++;
            }
        }
        int expect = total;
        waitFor("every SharedCount sees " + expect, () -> {
            for (SharedCount sc : counts) if (sc.getCount() != expect) return false;
            return true;
        });
        List<DistributedAtomicLong> longs = new ArrayList<>();
        for (int i = 0; i < 3; i++)
            longs.add(new DistributedAtomicLong(client(), base + "/long", new ExponentialBackoffRetry(10, 10)));
        List<Throwable> errors = Collections.synchronizedList(new ArrayList<>());
        List<Thread> threads = new ArrayList<>();
        for (DistributedAtomicLong l : longs) {
            Thread t = new Thread(() -> {
                try {
                    for (int k = 0; k < 10; k++) {
                        AtomicValue<Long> r = l.increment();
                        check(r.succeeded(), "increment");
                    }
                } catch (Throwable e) { errors.add(e); }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) t.join(4 * WAIT_MS);
        check(errors.isEmpty(), "errors: " + errors);
        eq(30L, longs.get(0).get().postValue(), "atomic long after 30 increments");
    }

    static void service_discovery(String base) throws Exception {
        CuratorFramework c = client();
        String sbase = base + "/services";
        ServiceDiscovery<Map> sd = ServiceDiscoveryBuilder.builder(Map.class).client(c).basePath(sbase)
            .serializer(new JsonInstanceSerializer<>(Map.class)).build();
        open.add(sd);
        sd.start();
        Map<String, Object> payload = new HashMap<>();
        payload.put("zone", "b");
        ServiceInstance<Map> i1 = ServiceInstance.<Map>builder().name("api").id("i1").address("10.0.0.1").port(8080).payload(payload).build();
        ServiceInstance<Map> i2 = ServiceInstance.<Map>builder().name("api").id("i2").address("10.0.0.2").port(8081).build();
        sd.registerService(i1);
        sd.registerService(i2);
        eq(Collections.singletonList("api"), new ArrayList<>(sd.queryForNames()), "service names");
        Collection<ServiceInstance<Map>> all = sd.queryForInstances("api");
        eq(2, all.size(), "instances");
        ServiceInstance<Map> got = sd.queryForInstance("api", "i1");
        eq("10.0.0.1", got.getAddress(), "address");
        eq(8080, got.getPort(), "port");
        eq("b", got.getPayload().get("zone"), "payload");
        Stat st = c.checkExists().forPath(sbase + "/api/i1");
        check(st != null && st.getEphemeralOwner() != 0, "instance node is ephemeral");
        String json = s(c.getData().forPath(sbase + "/api/i1"));
        check(json.contains("\"name\":\"api\"") && json.contains("\"registrationTimeUTC\""), "instance JSON " + json);
        ServiceProvider<Map> prov = sd.serviceProviderBuilder().serviceName("api").providerStrategy(new RoundRobinStrategy<>()).build();
        open.add(prov);
        prov.start();
        waitFor("provider sees two", () -> prov.getAllInstances().size() == 2);
        Set<String> picked = new HashSet<>();
        for (int k = 0; k < 4; k++) picked.add(prov.getInstance().getId());
        eq(new HashSet<>(Arrays.asList("i1", "i2")), picked, "round robin picks");
        ServiceCache<Map> cache = sd.serviceCacheBuilder().name("api").build();
        open.add(cache);
        cache.start();
        sd.unregisterService(i2);
        waitFor("service cache drops i2", () -> cache.getInstances().size() == 1);
        prov.close();
        cache.close();
        sd.close();
        waitFor("closing discovery unregisters", () -> children(c, sbase + "/api").isEmpty());
    }

    static void group_member(String base) throws Exception {
        String p = base + "/group";
        GroupMember a = new GroupMember(client(), p, "a", b("pa"));
        GroupMember bm = new GroupMember(client(), p, "b", b("pb"));
        open.add(a);
        open.add(bm);
        a.start();
        bm.start();
        waitFor("both members seen by both", () -> a.getCurrentMembers().size() == 2 && bm.getCurrentMembers().size() == 2);
        eq("pb", s(a.getCurrentMembers().get("b")), "payload of b seen by a");
        bm.setThisData(b("pb2"));
        waitFor("updated payload", () -> "pb2".equals(s(a.getCurrentMembers().get("b"))));
        bm.close();
        waitFor("a sees b leave", () -> a.getCurrentMembers().keySet().equals(Collections.singleton("a")));
        a.close();
    }

    static void persistent_node(String base) throws Exception {
        CuratorFramework c = client();
        CuratorFramework other = client();
        String p = base + "/pnode";
        PersistentNode n = new PersistentNode(c, CreateMode.EPHEMERAL, false, p, b("mine"));
        open.add(n);
        n.start();
        check(n.waitForInitialCreate(WAIT_MS, TimeUnit.MILLISECONDS), "initial create");
        eq(p, n.getActualPath(), "actual path");
        // Another session may be on a server that has not applied the create yet (ZooKeeper
        // promises each client its own order, and other clients a view that catches up in time).
        waitFor("seen by another client", () -> other.checkExists().forPath(p) != null);
        eq("mine", s(other.getData().forPath(p)), "data seen by another client");
        other.delete().forPath(p);
        waitFor("re-created after someone deleted it", () -> other.checkExists().forPath(p) != null);
        n.setData(b("new"));
        waitFor("updated", () -> "new".equals(s(other.getData().forPath(p))));
        n.close();
        waitFor("gone after close", () -> other.checkExists().forPath(p) == null);
    }

    // ------------------------------------------------------------------ main

    interface Scenario { void run(String base) throws Exception; }

    public static void main(String[] args) throws Exception {
        connect = args[0];
        Map<String, Scenario> all = new LinkedHashMap<>();
        all.put("crud", CuratorSuite::crud);
        all.put("transaction", CuratorSuite::transaction);
        all.put("curator_cache", CuratorSuite::curator_cache);
        all.put("path_children_cache", CuratorSuite::path_children_cache);
        all.put("node_cache", CuratorSuite::node_cache);
        all.put("persistent_watch", CuratorSuite::persistent_watch);
        all.put("leader_latch", CuratorSuite::leader_latch);
        all.put("leader_selector", CuratorSuite::leader_selector);
        all.put("mutex", CuratorSuite::mutex);
        all.put("semaphore", CuratorSuite::semaphore);
        all.put("shared_counters", CuratorSuite::shared_counters);
        all.put("service_discovery", CuratorSuite::service_discovery);
        all.put("group_member", CuratorSuite::group_member);
        all.put("persistent_node", CuratorSuite::persistent_node);
        List<String> names = args.length > 1 ? Arrays.asList(args).subList(1, args.length) : new ArrayList<>(all.keySet());
        if (names.size() == 1 && names.get(0).equals("list")) {
            for (String n : all.keySet()) System.out.println(n);
            return;
        }
        for (String name : names) {
            Scenario sc = all.get(name);
            if (sc == null) {
                System.out.println("RESULT " + name + " FAIL unknown scenario; known: " + all.keySet());
                continue;
            }
            long t0 = System.currentTimeMillis();
            String outcome;
            try {
                sc.run("/curator-suite/" + name);
                outcome = "PASS";
            } catch (Throwable e) {
                outcome = "FAIL " + e.toString().replace('\n', ' ');
                if (!(e instanceof Check)) e.printStackTrace();
            } finally {
                Collections.reverse(open);
                for (AutoCloseable x : open) {
                    try { x.close(); } catch (Throwable ignored) { }
                }
                open.clear();
            }
            System.out.println("RESULT " + name + " " + outcome + " (" + (System.currentTimeMillis() - t0) + " ms)");
            System.out.flush();
        }
        System.exit(0);
    }
}
