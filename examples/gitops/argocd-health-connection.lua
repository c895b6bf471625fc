-- Argo CD health check for amperity.dev/AmperityConnection and
-- amperity.dev/ClusterAmperityConnection.
-- Healthy once the credentials were verified (Ready), Degraded when a person must
-- act (Stalled: the Secret, the allow-list, refused credentials), and Progressing
-- until the operator has verified the latest spec (or while Amperity cannot be asked).
local hs = { status = "Progressing", message = "Waiting for the operator to verify the connection" }
if obj.status == nil then
  return hs
end
local function condition(kind)
  if obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to observe the latest change"
  return hs
end
local ready = condition("Ready")
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end
if ready == nil then
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
end
hs.message = ready.message
return hs
