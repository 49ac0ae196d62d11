import java.util.Collection;

import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.curator.x.discovery.ServiceDiscovery;
import org.apache.curator.x.discovery.ServiceDiscoveryBuilder;
import org.apache.curator.x.discovery.ServiceInstance;

/**
 * One instance registered, or all instances read back, with Apache Curator's service
 * discovery (Debian's libcurator-discovery-java): ServiceInstance JSON under
 * /services/NAME/UUID, an ephemeral node of a 4 s session.
 *
 * usage: register SERVER NAME HOST PORT   -- prints "registered", keeps it until killed
 *        list SERVER NAME                 -- prints "host:port" per instance
 */
public class CuratorRegistrant {
    public static void main(String[] args) throws Exception {
        CuratorFramework client = CuratorFrameworkFactory.builder().connectString(args[1])
                .sessionTimeoutMs(4000).connectionTimeoutMs(15000)
                .retryPolicy(new ExponentialBackoffRetry(100, 5)).build();
        client.start();
        client.blockUntilConnected();
        ServiceDiscovery<Void> sd = ServiceDiscoveryBuilder.builder(Void.class).client(client)
                .basePath("/services").build();
        sd.start();
        if (args[0].equals("list")) {
            Collection<ServiceInstance<Void>> all = sd.queryForInstances(args[2]);
            for (ServiceInstance<Void> i : all) {
                System.out.println(i.getAddress() + ":" + i.getPort());
            }
            sd.close();
            client.close();
            return;
        }
        ServiceInstance<Void> me = ServiceInstance.<Void>builder().name(args[2]).address(args[3])
                .port(Integer.parseInt(args[4])).build();
        sd.registerService(me);
        System.out.println("registered");
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }
}
