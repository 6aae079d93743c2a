-- First touch through identity stitching (zori-spec §9.29): a user's first touch is the earliest
-- first touch among all the visitors linked to them; a visitor's attributed first touch is its
-- user's, or its own when it is not identified.

-- For each user, the visitor carrying the user's earliest first touch.
CREATE VIEW user_first_touch AS
SELECT DISTINCT ON (i.user_id)
       i.user_id,
       v.visitor_id AS ft_visitor_id
FROM identities i
JOIN visitors v ON v.visitor_id = i.visitor_id
ORDER BY i.user_id, v.first_seen_at, v.ft_event_id;
